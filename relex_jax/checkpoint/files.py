"""Finding a checkpoint directory (local or on the Hugging Face hub) and reading its tensors.

PyTorch is needed only for `pytorch_model.bin` files; safetensors load without it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
_TORCH_WEIGHT_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


def resolve_model_dir(path_or_hub_id: str | os.PathLike, config_name: str, extra_patterns: tuple[str, ...] = ()) -> Path:
    """A local directory as is; otherwise download `config_name`, weights and `extra_patterns`
    (e.g. tokenizer files) from the Hugging Face hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if path.exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise FileNotFoundError(f"{name!r} is neither a model directory nor a Hugging Face hub id")
    from huggingface_hub import snapshot_download  # a dependency of transformers

    wanted = [config_name, *extra_patterns]
    try:
        local = Path(snapshot_download(name, allow_patterns=[*wanted, *_WEIGHT_PATTERNS]))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(name, allow_patterns=[*wanted, *_TORCH_WEIGHT_PATTERNS]))
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise OSError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Without network access, pass a local directory holding {config_name} and model.safetensors "
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
            try:  # framework="flax" understands bfloat16, which numpy alone does not
                with safe_open(file, framework="flax") as f:
                    for key in f.keys():
                        tensors[key] = np.asarray(f.get_tensor(key))
            except Exception as err:  # safetensors raises its own error types for damaged files
                raise ValueError(f"cannot read weights file {file}: {type(err).__name__}: {err}") from err
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
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as err:  # truncated or not a torch file
                raise ValueError(f"cannot read weights file {file}: {type(err).__name__}: {err}") from err
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


