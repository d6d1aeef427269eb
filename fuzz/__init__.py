"""The fuzz campaign (``make fuzz``): every reader of outside data fed generated bad input.

One module per target (``TARGETS`` below, in run order); each defines ``NAME``, ``MIN_INPUTS``
(the campaign's floor for it), ``EXAMPLES`` (hypothesis examples of a full run; one example may
carry several inputs, a batch or a file's lines), ``MEMORY_BYTES`` (the bound on the traced peak of
one example), ``strategy()`` (the hypothesis strategy of one example), ``setup(workdir)`` (a
context built once) and ``check(context, example) -> inputs`` (raises ``AssertionError`` when the
contract is broken; any other exception escaping the reader is a failure too). ``fuzz.core`` runs
a target; ``python -m fuzz`` (``fuzz/__main__.py``) runs the campaign and prints the table.
Inputs are structure-aware (``fuzz.gen``): valid records mutated with wrong types, huge integers,
``1e999``, NaN, deep nesting, long strings, control characters, duplicate keys, truncation and
random bytes.
"""

TARGETS = (
    "decode",
    "records",
    "bundle",
    "pointer",
    "training_data",
    "backtest",
    "replay",
    "health",
    "tail",
    "settings",
    "rules",
)
