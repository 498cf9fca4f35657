"""Measurements of the trained models on held-out data, beside other tools, with committed results."""
