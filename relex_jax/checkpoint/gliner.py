"""Read a PyTorch gliner span-relex checkpoint (`gliner_config.json` + weights) into Flax variables,
and name Flax variables back as a gliner state dict.

Variables are `{"params": ...}`, plus `{"batch_stats": ...}` for the TuckER scorer's BatchNorm
running statistics (torch buffers, not parameters).

The backbone's tensors are read with its family's table (`ENCODER_FORMATS`, by the config's
`encoder_config.model_type`). Parameters gliner's backbone holds but never computes with (BERT's
pooler) are not model variables: they travel aside, as torch tensors, so that converting back
gives gliner the exact checkpoint it wrote (or zeros, for a model that never had them).
"""

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
from relex_jax.checkpoint.hf_encoder import encoder_format
from relex_jax.checkpoint.torch_mapping import (
    GLINER_BACKBONE_PREFIX,
    RELEX_UNUSED_KEYS,
    TRIPLES_BATCH_STATS_RULES,
    CheckpointMismatchError,
    convert_state_dict,
    flatten_params,
    gliner_param_rules,
    split_batch_norm_buffers,
    to_state_dict,
)
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


def abstract_variables(config: RelexConfig) -> dict[str, Any]:
    """Shapes/dtypes of the model's variables (every collection), without allocating them."""
    variables = jax.eval_shape(RelexModule(config).init, jax.random.PRNGKey(0), *example_inputs(config))
    return nn.meta.unbox(dict(variables))


def _param_rules(config: RelexConfig):
    return gliner_param_rules(encoder_format(config.encoder).rules)


def gliner_only_shapes(config: RelexConfig) -> dict[str, tuple[int, ...]]:
    """{gliner state-dict name: shape} of the backbone parameters gliner never computes with."""
    encoder = config.encoder
    return {GLINER_BACKBONE_PREFIX + k: v for k, v in encoder_format(encoder).gliner_only(encoder).items()}


def state_dict_to_variables(state: dict[str, np.ndarray], config: RelexConfig) -> dict[str, Any]:
    """A gliner state dict -> Flax variables, checked key by key against the model `config` builds.

    The `gliner_only_shapes` tensors are skipped here (`split_gliner_only` keeps them)."""
    unused = sorted(k for k in state if any(re.fullmatch(p, k) for p in RELEX_UNUSED_KEYS))
    if unused:
        logger.warning("dropping %d tensors gliner stores but never uses: %s", len(unused), unused)
    state, _ = split_gliner_only(state, config)
    rest, stats = split_batch_norm_buffers({k: v for k, v in state.items() if k not in unused})
    shapes = {c: {p: x.shape for p, x in flatten_params(tree).items()} for c, tree in abstract_variables(config).items()}
    variables = {"params": convert_state_dict(rest, _param_rules(config), shapes["params"], dtype=np.float32)}
    if stats or "batch_stats" in shapes:
        variables["batch_stats"] = convert_state_dict(
            stats, TRIPLES_BATCH_STATS_RULES, shapes.get("batch_stats", {}), dtype=np.float32
        )
    return variables


def split_gliner_only(state: dict[str, Any], config: RelexConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the rest, the `gliner_only_shapes` tensors as stored); raises on a misshaped one."""
    shapes = gliner_only_shapes(config)
    aside = {k: np.asarray(v) for k, v in state.items() if k in shapes}
    misshaped = [f"{k}: checkpoint {v.shape}, model {shapes[k]}" for k, v in aside.items() if v.shape != shapes[k]]
    if misshaped:
        raise CheckpointMismatchError(f"shape mismatches: {misshaped}")
    return {k: v for k, v in state.items() if k not in shapes}, aside


def variables_to_state_dict(
    variables: dict[str, Any], config: RelexConfig, gliner_only: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Flax variables -> a gliner state dict (torch names and layouts), for the model `config`
    describes. `gliner_only` supplies the tensors gliner holds but never uses; missing ones are zeros."""
    unknown = set(variables) - {"params", "batch_stats"}
    if unknown:
        raise CheckpointMismatchError(f"variable collections with no gliner counterpart: {sorted(unknown)}")
    state = to_state_dict(variables["params"], _param_rules(config))
    stats = to_state_dict(variables.get("batch_stats", {}), TRIPLES_BATCH_STATS_RULES)
    for key in stats:
        if key.endswith(".running_mean"):  # torch's BatchNorm1d also keeps a step counter; unused
            state[key.removesuffix("running_mean") + "num_batches_tracked"] = np.zeros((), np.int64)
    _, aside = split_gliner_only(dict(gliner_only or {}), config)
    extra = {k: aside.get(k, np.zeros(shape, np.float32)) for k, shape in gliner_only_shapes(config).items()}
    return {**state, **stats, **extra}


def read_gliner_checkpoint(path_or_hub_id: str | os.PathLike):
    """`load_gliner_checkpoint`'s (config, variables, directory) with the `gliner_only` tensors
    inserted third: what a conversion needs to give gliner back its exact checkpoint."""
    model_dir = resolve_model_dir(path_or_hub_id, GLINER_CONFIG, TOKENIZER_PATTERNS)
    config = read_gliner_config(model_dir)
    state = read_state_dict(model_dir)
    _, aside = split_gliner_only(state, config)
    if aside:
        logger.info("keeping aside %d tensors gliner's backbone holds but never uses: %s", len(aside), sorted(aside))
    return config, state_dict_to_variables(state, config), aside, model_dir


def load_gliner_checkpoint(path_or_hub_id: str | os.PathLike) -> tuple[RelexConfig, dict[str, Any], Path]:
    """(config, float32 Flax variables, resolved directory) of a gliner span-relex checkpoint.

    Raises for unsupported settings (naming them) and for any unexpected, missing or misshaped
    tensor; tensors gliner builds but never uses (`cross_fuser.*`) are reported and dropped.
    """
    config, variables, _, model_dir = read_gliner_checkpoint(path_or_hub_id)
    return config, variables, model_dir
