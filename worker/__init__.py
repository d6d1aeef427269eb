"""fraud-scoring worker: the light runtime side (Kafka, LiteRT, Prometheus; never TensorFlow).

Importing this package imports nothing heavy; submodules are imported where they are used.
"""

__version__ = "0.1.0"
