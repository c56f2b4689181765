"""`BatchStream`: one host's gliner-shaped training batches, a pure function of the batch number.

Batch b of a host takes rows of the epoch permutation `default_rng([seed, host, epoch])` of that
host's examples, and its collation draws from `random.Random` seeded with (seed, host, b); each
epoch's last `len(examples) % rows` examples (in that epoch's order) wait for a later epoch.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

import numpy as np


@dataclasses.dataclass
class BatchStream:
    """This host's batches, indexed by batch number (see the module docstring)."""

    examples: Sequence[Any]
    rows: int
    seed: int
    host: int = 0

    def __post_init__(self):
        if len(self.examples) < self.rows:
            raise ValueError(f"{len(self.examples)} training examples on this host, fewer than a batch of {self.rows}")
        self.per_epoch = len(self.examples) // self.rows
        self._epoch, self._order = -1, None

    def position(self, batch_number: int) -> dict[str, int]:
        return {"batches": batch_number, "examples": len(self.examples), "rows": self.rows, "seed": self.seed}

    def check_position(self, state: dict[str, Any]) -> int:
        """The batch number of a checkpoint's data state, after checking it fits this data."""
        expected = self.position(int(state.get("batches", -1)))
        if state != expected:
            raise ValueError(
                f"the checkpoint's data position {state} does not fit this run's data {expected}: the training "
                "data, batch size, host count or seed changed since it was written"
            )
        return expected["batches"]

    def batch(self, number: int) -> tuple[list[Any], random.Random, int]:
        """(examples, collation rng, epoch) of batch `number`."""
        epoch, index = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, self.host, epoch]).permutation(len(self.examples))
        rows = self._order[index * self.rows: (index + 1) * self.rows]
        return [self.examples[i] for i in rows], random.Random(f"{self.seed}/{self.host}/{number}"), epoch
