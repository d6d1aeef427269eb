import sys

from training.fraud_train import main

sys.exit(main())
