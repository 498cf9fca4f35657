"""Drives the real system from outside, for the benchmark and the tests: starting the service as a process on
loopback and synthesising the uploads users send. Not part of the product; nothing in the product imports it."""
