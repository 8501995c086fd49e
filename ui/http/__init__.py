"""The HTTP status server (127.0.0.1 only): the seed's JSON endpoints, /health and /metrics.
"""
