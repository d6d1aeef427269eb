"""The programs, each in a file named for it: ``fraud_worker.py`` (``fraud-worker`` and its
subcommands in ``subcommands/``), ``fraud_feedback.py``, ``fraud_replay.py``; ``settings.py`` is the
flag and ``FRAUD_*`` parsing the subcommands and fraud-replay share with the worker.

Nothing outside this package imports it.
"""
