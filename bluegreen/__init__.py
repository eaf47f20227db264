"""bluegreen: zero-downtime blue-green migration of a product catalog through Apache Kafka.

This package is the shared plumbing (configuration, Kafka client factory, metrics,
logging, the local stack and the CLI); the pipeline itself lives in the top-level
packages ``schemas``, ``producers``, ``consumers`` and ``cutover``.
"""

__version__ = "0.1.0"
