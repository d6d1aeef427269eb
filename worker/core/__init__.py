"""The pure core: decode, transforms, scoring, outputs and the bundle contract.

No Kafka client, no loop, no settings object, no metrics registry: each function takes plain values
and returns plain values, so training, the backtest and the live worker call the same code. The
dependency rule (pyproject.toml ``[tool.importlinter]``, tests/unit/test_layers.py) holds it.
"""
