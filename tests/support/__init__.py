"""Test utilities shared across packages: real servers on loopback ports."""
