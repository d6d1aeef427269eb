"""The seeded synthetic generator, for the training job: it lives in ``worker.tools.synthetic``.

``fraud-replay`` runs in the worker image, which has no ``training`` package, and uses the same
generator; training may import the worker side, never the reverse, so the one copy sits there.
"""

from worker.tools.synthetic import GENERATOR, HEAVY_COLUMNS, N_COMPONENTS, generate, spec, spec_sha256, write_csv

__all__ = ["GENERATOR", "HEAVY_COLUMNS", "N_COMPONENTS", "generate", "spec", "spec_sha256", "write_csv"]
