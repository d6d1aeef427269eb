"""``python -m worker.feedback``: the same as ``fraud-feedback``."""

import sys

from worker.feedback.cli import main

sys.exit(main())
