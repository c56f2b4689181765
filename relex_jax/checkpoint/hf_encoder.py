"""Load a Hugging Face encoder (local directory or hub id) as Flax module + params.

This is how a new relex model starts from a pretrained encoder. `config.json`'s `model_type`
picks the family (`relex_jax.modeling.encoders.ENCODERS`): "deberta-v2" (DeBERTa-v2/v3) or
"bert" (BERT and its look-alikes such as MiniLM); `ENCODER_FORMATS` says how each family's
weights are stored. PyTorch is only needed for checkpoints stored as
`pytorch_model.bin`; `model.safetensors` loads without it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.checkpoint.files import read_state_dict, resolve_model_dir
from relex_jax.checkpoint.torch_mapping import (
    BERT_RULES,
    DEBERTA_V2_RULES,
    CheckpointMismatchError,
    ModuleRule,
    convert_state_dict,
    flatten_params,
)
from relex_jax.modeling.bert import BertConfig, BertModel
from relex_jax.modeling.deberta import DebertaConfig, DebertaV2Model, stack_layer_params
from relex_jax.modeling.encoders import DEFAULT_MODEL_TYPE, ENCODERS, config_model_type, encoder_config

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncoderFormat:
    """How one family's PyTorch checkpoints store the backbone."""

    rules: tuple[ModuleRule, ...]
    # Task models (DebertaV2ForMaskedLM, BertForMaskedLM, ...) store the backbone under this
    # prefix next to their heads.
    prefix: str
    # Regexes on backbone tensor names (prefix stripped) that the encoder deliberately does not
    # use, given its config: buffers transformers also drops, and modules we do not build.
    unused: Callable[[Any], tuple[str, ...]]
    # Parameters gliner's backbone holds but never computes with, as {torch name: shape}: the
    # converter carries them aside (`relex_jax.checkpoint.gliner`) so gliner can load strictly.
    gliner_only: Callable[[Any], dict[str, tuple[int, ...]]] = lambda config: {}


def _deberta_unused(config: DebertaConfig) -> tuple[str, ...]:
    unused = (r"embeddings\.position_ids",)
    if not config.position_biased_input:
        # transformers ignores stored absolute position embeddings the config does not use.
        unused += (r"embeddings\.position_embeddings\.weight",)
    return unused


def _bert_unused(config: BertConfig) -> tuple[str, ...]:
    # Old checkpoints store the index buffers; the pooler (CLS dense + tanh) is not part of the
    # encoder GLiNER uses, so it is dropped by name, never matched against anything else.
    return (r"embeddings\.(position_ids|token_type_ids)", r"pooler\.dense\.(weight|bias)")


def _bert_pooler(config: BertConfig) -> dict[str, tuple[int, ...]]:
    # gliner builds its BERT backbone with transformers' default pooler, whose output it ignores.
    h = config.hidden_size
    return {"pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}


ENCODER_FORMATS: dict[str, EncoderFormat] = {
    "deberta-v2": EncoderFormat(DEBERTA_V2_RULES, "deberta.", _deberta_unused),
    "bert": EncoderFormat(BERT_RULES, "bert.", _bert_unused, _bert_pooler),
}


def encoder_format(config: Any) -> EncoderFormat:
    """The checkpoint format of a built encoder config's family."""
    return ENCODER_FORMATS[config_model_type(config)]


def select_backbone_tensors(
    state: dict[str, np.ndarray], prefix: str, unused: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Strip the task-model `prefix` and drop the `unused` tensors, logging what was dropped."""
    ignored = [k for k in state if any(re.fullmatch(p, k.removeprefix(prefix)) for p in unused)]
    state = {k: v for k, v in state.items() if k not in ignored}
    if any(k.startswith(prefix) for k in state):
        heads = sorted(k for k in state if not k.startswith(prefix))
        if heads:
            logger.info("ignoring %d non-backbone tensors (task heads): %s", len(heads), heads)
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
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
) -> tuple[DebertaV2Model | BertModel, dict[str, Any]]:
    """Read a transformers DeBERTa-v2/v3 or BERT model into `(module, params)`.

    `module.apply({"params": params}, input_ids, attention_mask)` returns the last hidden state
    exactly as `transformers.DebertaV2Model` / `transformers.BertModel` does. Raises `ValueError`
    for an unsupported `model_type` or config, and `CheckpointMismatchError` naming every
    unexpected, missing or misshaped tensor.
    """
    model_dir = resolve_model_dir(path_or_hub_id, "config.json")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}")
    hf_config = json.loads(config_file.read_text())
    # Config and weight errors name the file and the family it was read as: a model_type that
    # does not fit the rest of config.json, or the weights, shows up there.
    where = f"{config_file} (model_type {hf_config.get('model_type') or DEFAULT_MODEL_TYPE!r})"
    try:
        config = encoder_config(hf_config)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    family = config_model_type(config)
    module = ENCODERS[family].module_cls(config, dtype=dtype, param_dtype=param_dtype)
    expected = {path: leaf.shape for path, leaf in flatten_params(abstract_params(module)).items()}
    stored = ENCODER_FORMATS[family]
    state = select_backbone_tensors(read_state_dict(model_dir), stored.prefix, stored.unused(config))
    try:
        params = convert_state_dict(state, stored.rules, expected, dtype=np.dtype(param_dtype))
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"the weights in {model_dir} do not fit the {type(module).__name__} "
                                      f"that {where} describes: {err}") from None
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if scan_layers:
        params = stack_layer_params(params, config)
    return module.clone(remat=remat, scan_layers=scan_layers), params
