"""Placeholder entry point: training is not implemented yet (tracked as the training issue)."""

import sys

sys.exit("python -m train: training is not implemented yet in this version of relex-jax (see README, Status).")
