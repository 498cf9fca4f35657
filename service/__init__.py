"""Handwritten-digit recognition service: FastAPI over the versioned model store."""
