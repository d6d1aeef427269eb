"""``fraud-worker``'s subcommands, one module each, named for the subcommand (``create-topics`` is
``create_topics.py``). Each runs with the worker's base install only (no TensorFlow, no ``training``).
"""
