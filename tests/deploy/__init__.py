"""Tests of the deployment: compose files, the image definition and the load-balanced topology under nginx."""
