"""Tests of the model store format."""
