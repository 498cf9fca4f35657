"""The model servers users would otherwise pick, serving the store's digit classifiers beside the service in the
throughput benchmark: each one a module that starts its stack with ``python -m`` on ``DIGITS_HOST:DIGITS_PORT``."""
