"""Load a Hugging Face DeBERTa-v2/v3 backbone (local directory or hub id) as Flax module + params.

This is how a new relex model starts from a pretrained encoder. PyTorch is only needed for
checkpoints stored as `pytorch_model.bin`; `model.safetensors` loads without it.
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
import jax.numpy as jnp
import numpy as np

from relex_jax.checkpoint.torch_mapping import DEBERTA_V2_RULES, convert_state_dict, flatten_params
from relex_jax.modeling.deberta import DebertaConfig, DebertaV2Model, stack_layer_params

logger = logging.getLogger(__name__)

_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
_TORCH_WEIGHT_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
# Task models (DebertaV2ForMaskedLM, ...) store the backbone under this prefix next to their heads.
_BACKBONE_PREFIX = "deberta."
# Buffers and tensors `transformers` itself drops when loading a DebertaV2Model.
_ALWAYS_IGNORED = (r"embeddings\.position_ids",)


def resolve_model_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory as is; otherwise download config and weights from the Hugging Face hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if path.exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise FileNotFoundError(f"{name!r} is neither a model directory nor a Hugging Face hub id")
    from huggingface_hub import snapshot_download  # a dependency of transformers

    try:
        local = Path(snapshot_download(name, allow_patterns=["config.json", *_WEIGHT_PATTERNS]))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(name, allow_patterns=["config.json", *_TORCH_WEIGHT_PATTERNS]))
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise OSError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Without network access, pass a local directory holding config.json and model.safetensors "
            "(or pytorch_model.bin)."
        ) from err
    return local


def read_state_dict(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a transformers checkpoint directory (single or sharded) as numpy arrays."""
    safetensor_files = _shards(model_dir, "model.safetensors")
    if safetensor_files:
        from safetensors import safe_open

        tensors = {}
        for file in safetensor_files:
            # framework="flax" understands bfloat16, which numpy alone does not.
            with safe_open(file, framework="flax") as f:
                for key in f.keys():
                    tensors[key] = np.asarray(f.get_tensor(key))
        return tensors
    bin_files = _shards(model_dir, "pytorch_model.bin")
    if bin_files:
        try:
            import torch
        except ImportError:
            raise ImportError(
                f"{model_dir} stores its weights as pytorch_model.bin, which needs PyTorch to read: "
                "pip install torch (or re-save the model with safetensors)"
            ) from None
        tensors = {}
        for file in bin_files:
            state = torch.load(file, map_location="cpu", weights_only=True)
            tensors.update({k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()})
        return tensors
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin (or sharded index) in {model_dir}")


def _shards(model_dir: Path, filename: str) -> list[Path]:
    if (model_dir / filename).is_file():
        return [model_dir / filename]
    index = model_dir / f"{filename}.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    return []


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
    model_dir = resolve_model_dir(path_or_hub_id)
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
