"""The benchmarks: ``bench.py`` (``make bench``) runs one module per benchmark over ``harness.py``.

Nothing here imports the test suite; the broker launcher both share is ``scripts/local_kafka.py``.
"""
