"""Offline training of the MNIST classifiers and publication into the model store."""
