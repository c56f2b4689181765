"""`RelexModel`: a loaded model (config, Flax module, variables, tokenizer) and its jitted forward."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from relex_jax.checkpoint.convert import RELEX_CONFIG, load_relex_dir
from relex_jax.checkpoint.gliner import GLINER_CONFIG, load_gliner_checkpoint
from relex_jax.config import RelexConfig
from relex_jax.modeling.relex import RelexModule, RelexOutput

MIN_ENTITY_CAP = 16


@dataclasses.dataclass
class RelexModel:
    config: RelexConfig
    module: RelexModule
    variables: Any  # {"params": ...} (+ "batch_stats" for the TuckER scorer)
    tokenizer: Any  # tokenizers.Tokenizer, or None when the directory has no tokenizer.json
    model_dir: Path
    entity_cap: int = MIN_ENTITY_CAP  # grows (powers of two) when a batch needs more; never shrinks

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, dtype=None) -> "RelexModel":
        """Load a relex-jax model directory, or a gliner checkpoint (directory or hub id, converted
        in memory). `dtype` sets the compute dtype (parameters stay float32)."""
        path = Path(path_or_hub_id).expanduser()
        if (path / RELEX_CONFIG).is_file():
            config, variables = load_relex_dir(path)
            model_dir = path
        elif (path / GLINER_CONFIG).is_file() or not path.exists():
            config, variables, model_dir = load_gliner_checkpoint(path_or_hub_id)
        else:
            raise FileNotFoundError(f"{path} holds neither {RELEX_CONFIG} (relex-jax) nor {GLINER_CONFIG} (gliner)")
        module = RelexModule(config) if dtype is None else RelexModule(config, dtype=dtype)
        return cls(config, module, jax.device_put(variables), _load_tokenizer(model_dir), Path(model_dir))

    @functools.cached_property
    def _forward(self):
        return jax.jit(self.module.apply, static_argnames=("max_entities", "deterministic", "materialize"))

    def forward(self, inputs: tuple, threshold: float, max_entities: int | None = None) -> RelexOutput:
        """Run the model on prepared inputs (the positional arguments of `RelexModule`, without
        the threshold). With `max_entities=None` the entity cap is the model's `entity_cap`,
        raised to the next power of two whenever a row has more passing spans than it (and
        remembered, so later batches do not pay for a retry), so nothing is cut; a pinned
        `max_entities` that turns out too small raises instead."""
        cap = max_entities or self.entity_cap
        while True:
            out = self._forward(self.variables, *inputs, np.float32(threshold), max_entities=cap)
            needed = int(np.asarray(out.entity_count).max(initial=0))
            if needed <= cap:
                if max_entities is None:
                    self.entity_cap = cap
                return out
            if max_entities is not None:
                raise ValueError(
                    f"{needed} spans passed threshold {threshold} in one text, more than max_entities={max_entities}; "
                    "raise max_entities or the threshold, or pass max_entities=None to size it automatically"
                )
            cap = 1 << (needed - 1).bit_length()


def _load_tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    file = Path(model_dir) / "tokenizer.json"
    if not file.is_file():
        return None
    tokenizer = Tokenizer.from_file(str(file))
    # Padding and truncation saved in tokenizer.json are transformers' per-call settings; gliner
    # overrides them on every call (pad per batch, no practical truncation), and so do we.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
