"""`python -m train --config configs/NAME.yaml --workdir DIR [--resume] [dotted.key=value ...]`."""

import sys

from relex_jax.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
