import sys

from worker.programs.fraud_worker import main

# Guarded: the decoder child process (multiprocessing "spawn") imports this module again.
if __name__ == "__main__":
    sys.exit(main())
