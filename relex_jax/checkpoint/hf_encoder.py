"""Load a Hugging Face DeBERTa-v2/v3 backbone (local directory or hub id) as Flax module + params.

This is how a new relex model starts from a pretrained encoder. PyTorch is only needed for
checkpoints stored as `pytorch_model.bin`; `model.safetensors` loads without it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.checkpoint.files import read_state_dict, resolve_model_dir
from relex_jax.checkpoint.torch_mapping import DEBERTA_V2_RULES, convert_state_dict, flatten_params
from relex_jax.modeling.deberta import DebertaConfig, DebertaV2Model, stack_layer_params

logger = logging.getLogger(__name__)

# Task models (DebertaV2ForMaskedLM, ...) store the backbone under this prefix next to their heads.
_BACKBONE_PREFIX = "deberta."
# Buffers and tensors `transformers` itself drops when loading a DebertaV2Model.
_ALWAYS_IGNORED = (r"embeddings\.position_ids",)


def select_backbone_tensors(state: dict[str, np.ndarray], config: DebertaConfig) -> dict[str, np.ndarray]:
    """Strip the task-model prefix and drop what transformers also drops, logging what was dropped."""
    ignored = [k for k in state if any(re.fullmatch(p, k.removeprefix(_BACKBONE_PREFIX)) for p in _ALWAYS_IGNORED)]
    if not config.position_biased_input:
        # transformers ignores stored absolute position embeddings the config does not use.
        ignored += [k for k in state if k.removeprefix(_BACKBONE_PREFIX) == "embeddings.position_embeddings.weight"]
    state = {k: v for k, v in state.items() if k not in ignored}
    if any(k.startswith(_BACKBONE_PREFIX) for k in state):
        heads = sorted(k for k in state if not k.startswith(_BACKBONE_PREFIX))
        if heads:
            logger.info("ignoring %d non-backbone tensors (task heads): %s", len(heads), heads)
        state = {k[len(_BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(_BACKBONE_PREFIX)}
    if ignored:
        logger.info("ignoring tensors the encoder does not use: %s", sorted(ignored))
    return state


def abstract_params(module: nn.Module, seq_len: int = 8) -> dict[str, Any]:
    """Shapes and dtypes of `module`'s params without allocating them."""
    ids = jnp.zeros((1, seq_len), jnp.int32)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids, jnp.ones_like(ids))
    return nn.meta.unbox(variables["params"])


def load_hf_encoder(
    path_or_hub_id: str | os.PathLike,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    remat: bool = False,
    scan_layers: bool = False,
) -> tuple[DebertaV2Model, dict[str, Any]]:
    """Read a transformers DeBERTa-v2/v3 model into `(module, params)`.

    `module.apply({"params": params}, input_ids, attention_mask)` returns the last hidden state
    exactly as `transformers.DebertaV2Model` does. Raises `CheckpointMismatchError` naming every
    unexpected, missing or misshaped tensor.
    """
    model_dir = resolve_model_dir(path_or_hub_id, "config.json")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}")
    config = DebertaConfig.from_hf_dict(json.loads(config_file.read_text()))
    module = DebertaV2Model(config, dtype=dtype, param_dtype=param_dtype)
    expected = {path: leaf.shape for path, leaf in flatten_params(abstract_params(module)).items()}
    state = select_backbone_tensors(read_state_dict(model_dir), config)
    params = convert_state_dict(state, DEBERTA_V2_RULES, expected, dtype=np.dtype(param_dtype))
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if scan_layers:
        params = stack_layer_params(params, config)
    return module.clone(remat=remat, scan_layers=scan_layers), params
