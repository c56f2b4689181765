"""relex-jax model directories, and conversion to and from gliner checkpoint directories.

A relex-jax model directory holds:
  relex_config.json   every gliner config field (gliner's own `gliner_config.json` content), plus
                      `relex_jax_format`
  params/             the float32 Flax params tree as an Orbax checkpoint
  tokenizer files     copied verbatim from the source (tokenizer.json, tokenizer_config.json, ...)

Every directory is written next to its destination under a temporary name and renamed into
place only when complete, so an interrupted conversion never leaves a half-written model where
a good one was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from relex_jax.checkpoint.gliner import GLINER_CONFIG, TOKENIZER_PATTERNS, load_gliner_checkpoint
from relex_jax.checkpoint.torch_mapping import ADJACENCY_RULES, RELEX_RULES, CheckpointMismatchError, flatten_params, to_state_dict
from relex_jax.config import RelexConfig
from relex_jax.modeling.relex import RelexModule, example_inputs

logger = logging.getLogger(__name__)

RELEX_CONFIG = "relex_config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1


def abstract_relex_params(config: RelexConfig) -> dict[str, Any]:
    """Shapes/dtypes of the model's params, without allocating them."""
    variables = jax.eval_shape(RelexModule(config).init, jax.random.PRNGKey(0), *example_inputs(config))
    return nn.meta.unbox(variables["params"])


def _write_atomically(out: Path, overwrite: bool, fill) -> Path:
    """Build the directory `out` through `fill(tmp_dir)`, then move it into place."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _copy_tokenizer(src: Path, dst: Path) -> None:
    files = sorted({f for pattern in TOKENIZER_PATTERNS for f in src.glob(pattern) if f.is_file()})
    if not any(f.name == "tokenizer.json" for f in files):
        logger.warning("%s has no tokenizer.json; the model directory will have no fast tokenizer", src)
    for file in files:
        shutil.copy2(file, dst / file.name)


def save_relex_dir(out, config: RelexConfig, params, tokenizer_dir: Path | None, overwrite: bool = False) -> Path:
    """Write a relex-jax model directory (see module docstring)."""
    import orbax.checkpoint as ocp

    def fill(tmp: Path):
        (tmp / RELEX_CONFIG).write_text(
            json.dumps({**config.to_gliner_dict(), "relex_jax_format": FORMAT_VERSION}, indent=2, sort_keys=True)
        )
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save((tmp / PARAMS_DIR).absolute(), jax.tree_util.tree_map(np.asarray, params))
        checkpointer.wait_until_finished()
        if tokenizer_dir is not None:
            _copy_tokenizer(Path(tokenizer_dir), tmp)

    return _write_atomically(out, overwrite, fill)


def read_relex_config(model_dir: Path) -> RelexConfig:
    raw = json.loads((Path(model_dir) / RELEX_CONFIG).read_text())
    version = raw.pop("relex_jax_format", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{model_dir} has relex_jax_format {version!r}; this relex-jax reads {FORMAT_VERSION}")
    return RelexConfig.from_gliner_dict(raw)


def load_relex_dir(model_dir) -> tuple[RelexConfig, dict[str, Any]]:
    """(config, params) of a relex-jax model directory; params are checked against the config."""
    import orbax.checkpoint as ocp

    model_dir = Path(model_dir)
    if not (model_dir / RELEX_CONFIG).is_file():
        raise FileNotFoundError(f"no {RELEX_CONFIG} in {model_dir}: not a relex-jax model directory")
    config = read_relex_config(model_dir)
    expected = flatten_params(abstract_relex_params(config))
    params_dir = (model_dir / PARAMS_DIR).absolute()
    if not params_dir.is_dir():
        raise FileNotFoundError(f"no {PARAMS_DIR}/ checkpoint in {model_dir}")
    stored = ocp.StandardCheckpointer().metadata(params_dir)
    stored = flatten_params(getattr(stored, "item_metadata", stored))
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    misshaped = [p for p in set(expected) & set(stored) if tuple(stored[p].shape) != tuple(expected[p].shape)]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"{params_dir} does not fit {RELEX_CONFIG}: missing {missing}, unexpected {unexpected}, "
            f"misshaped {sorted(misshaped)}"
        )
    target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), abstract_relex_params(config))
    return config, ocp.StandardCheckpointer().restore(params_dir, target)


def gliner_to_relex(src, out, overwrite: bool = False) -> Path:
    """gliner checkpoint directory (or hub id) -> relex-jax model directory."""
    config, params, model_dir = load_gliner_checkpoint(src)
    return save_relex_dir(out, config, params, model_dir, overwrite)


def relex_to_gliner(src, out, overwrite: bool = False) -> Path:
    """relex-jax model directory -> a directory `gliner.GLiNER.from_pretrained` loads."""
    from safetensors.numpy import save_file

    config, params = load_relex_dir(src)
    state = to_state_dict(params, (*RELEX_RULES, *ADJACENCY_RULES))

    def fill(tmp: Path):
        (tmp / GLINER_CONFIG).write_text(json.dumps(config.to_gliner_dict(), indent=2, sort_keys=True))
        save_file(state, str(tmp / "model.safetensors"))
        _copy_tokenizer(Path(src), tmp)

    return _write_atomically(out, overwrite, fill)
