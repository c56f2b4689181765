"""`python -m relex_jax ...` is the `relex-jax` command."""

import sys

from relex_jax.cli import main

sys.exit(main())
