"""Finding a checkpoint directory (local or on the Hugging Face hub) and reading its tensors.

PyTorch is needed only for `pytorch_model.bin` files; safetensors load without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
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
        tensors = {}
        for file in safetensor_files:
            try:
                tensors.update(_read_safetensors(file))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as err:  # damaged
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


def _safetensors_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # a jax dependency; numpy alone has no bfloat16

    names = dict(F64="float64", F32="float32", F16="float16", I64="int64", I32="int32", I16="int16", I8="int8",
                 U64="uint64", U32="uint32", U16="uint16", U8="uint8", BOOL="bool")
    dtypes = {code: np.dtype(name) for code, name in names.items()}
    return {**dtypes, "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
            "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2)}


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    """The tensors of one .safetensors file, read into fresh numpy arrays.

    Plain reads, not `safetensors.safe_open`: that memory-maps the file, and every page it touches
    counts in the process's resident memory until the file is closed, i.e. a second full copy of
    the weights on top of the arrays while a checkpoint is read.
    """
    dtypes = _safetensors_dtypes()
    with open(file, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > os.fstat(f.fileno()).st_size - 8:
            raise ValueError(f"header size {header_size} exceeds the file")
        header = json.loads(f.read(header_size))
        header.pop("__metadata__", None)
        tensors = {}
        for key, info in header.items():
            start, end = info["data_offsets"]
            dtype, shape = dtypes[info["dtype"]], tuple(info["shape"])
            buffer = np.empty(end - start, np.uint8)
            if buffer.size != dtype.itemsize * math.prod(shape):
                raise ValueError(f"{key}: {end - start} bytes for {info['dtype']} {list(shape)}")
            f.seek(8 + header_size + start)
            if f.readinto(buffer) != buffer.size:
                raise ValueError(f"{key}: file ends inside the tensor data (truncated?)")
            tensors[key] = buffer.view(dtype).reshape(shape)
    return tensors


def _shards(model_dir: Path, filename: str) -> list[Path]:
    if (model_dir / filename).is_file():
        return [model_dir / filename]
    index = model_dir / f"{filename}.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    return []


