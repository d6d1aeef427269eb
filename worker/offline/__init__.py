"""Libraries for work on files rather than streams: the seeded synthetic generator (used by
fraud-replay and the training job) and the backtest's label metrics.
"""
