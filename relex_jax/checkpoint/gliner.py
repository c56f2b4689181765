"""Read a PyTorch gliner span-relex checkpoint (`gliner_config.json` + weights) into Flax params."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from relex_jax.checkpoint.files import read_state_dict, resolve_model_dir
from relex_jax.checkpoint.torch_mapping import ADJACENCY_RULES, RELEX_RULES, RELEX_UNUSED_KEYS, convert_state_dict, flatten_params
from relex_jax.config import RelexConfig
from relex_jax.modeling.relex import RelexModule, example_inputs

logger = logging.getLogger(__name__)

GLINER_CONFIG = "gliner_config.json"
TOKENIZER_PATTERNS = ("tokenizer*", "spm.model", "special_tokens_map.json", "added_tokens.json", "vocab.*")


def read_gliner_config(model_dir: Path) -> RelexConfig:
    config_file = model_dir / GLINER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"no {GLINER_CONFIG} in {model_dir}: not a gliner model directory")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    return RelexConfig.from_gliner_dict(raw)


def load_gliner_checkpoint(path_or_hub_id: str | os.PathLike) -> tuple[RelexConfig, dict[str, Any], Path]:
    """(config, float32 Flax params, resolved directory) of a gliner span-relex checkpoint.

    Raises for unsupported settings (naming them) and for any unexpected, missing or misshaped
    tensor; tensors gliner builds but never uses (`cross_fuser.*`) are reported and dropped.
    """
    model_dir = resolve_model_dir(path_or_hub_id, GLINER_CONFIG, TOKENIZER_PATTERNS)
    config = read_gliner_config(model_dir)
    module = RelexModule(config)
    abstract = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *example_inputs(config))["params"])
    expected = {path: leaf.shape for path, leaf in flatten_params(abstract).items()}
    state = read_state_dict(model_dir)
    unused = sorted(k for k in state if any(re.fullmatch(p, k) for p in RELEX_UNUSED_KEYS))
    if unused:
        logger.warning("dropping %d tensors gliner stores but never uses: %s", len(unused), unused)
    state = {k: v for k, v in state.items() if k not in unused}
    params = convert_state_dict(state, (*RELEX_RULES, *ADJACENCY_RULES), expected, dtype=np.float32)
    return config, params, model_dir
