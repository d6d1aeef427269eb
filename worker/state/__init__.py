"""State the worker keeps on disk between events: the behavioural features' per-partition stores
(``feature_store.py``) and their owner in the worker (``feature_state.py``). Imports only the core."""
