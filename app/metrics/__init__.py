"""Prometheus metrics: traffic, cost, drift and vLLM backends (``GET /metrics``).

See ``families`` for every exported family, ``runtime`` for how they are built and kept up.
"""
