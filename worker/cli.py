"""``fraud-worker``: not built yet."""

import sys


def main(argv=None) -> int:
    print("fraud-worker: not built yet", file=sys.stderr)
    return 1
