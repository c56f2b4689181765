"""relex-jax model directories, and conversion to and from gliner checkpoint directories.

A relex-jax model directory holds:
  relex_config.json   every gliner config field (gliner's own `gliner_config.json` content), plus
                      `relex_jax_format`
  variables/          the float32 Flax variables ({"params": ...}, plus "batch_stats" for the
                      TuckER scorer) as an Orbax checkpoint
  tokenizer files     copied verbatim from the source (tokenizer.json, tokenizer_config.json, ...)
  gliner_only.safetensors  only for a model converted from gliner whose backbone holds parameters
                      gliner never computes with (BERT's pooler), so converting back is exact

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
from typing import Any, Callable, Mapping

import jax
import numpy as np

from relex_jax.checkpoint.gliner import (
    GLINER_CONFIG,
    TOKENIZER_PATTERNS,
    abstract_variables,
    read_gliner_checkpoint,
    variables_to_state_dict,
)
from relex_jax.checkpoint.torch_mapping import CheckpointMismatchError, flatten_params
from relex_jax.config import FORMAT_VERSION, RELEX_CONFIG, RelexConfig, read_relex_config

logger = logging.getLogger(__name__)

VARIABLES_DIR = "variables"
GLINER_ONLY = "gliner_only.safetensors"


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


def _save_variables(path: Path, variables) -> None:
    """The variables as an Orbax checkpoint at `path`."""
    import orbax.checkpoint as ocp

    # Orbax's default numpy handler deep-copies every array before writing (against concurrent
    # mutation during an async save): a second full copy of the weights. This save is
    # synchronous and nothing touches the arrays meanwhile, so the copy is skipped.
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False))
    )
    # One process writes the directory (in a multi-host run, process 0 alone): no barriers with
    # the other processes, which are busy training.
    this_process = ocp.options.MultiprocessingOptions(
        primary_host=jax.process_index(), active_processes={jax.process_index()},
        barrier_sync_key_prefix=f"relex_dir_{jax.process_index()}",
    )
    handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, multiprocessing_options=this_process)
    with ocp.Checkpointer(handler, multiprocessing_options=this_process) as checkpointer:
        checkpointer.save(
            path.absolute(), args=ocp.args.PyTreeSave(jax.tree_util.tree_map(np.asarray, variables))
        )


def save_relex_dir(
    out, config: RelexConfig, variables, tokenizer_dir: Path | None, overwrite: bool = False,
    gliner_only: dict[str, np.ndarray] | None = None, extra_files: Mapping[str, str | bytes | Callable[[Path], Any]] | None = None,
) -> Path:
    """Write a relex-jax model directory (see module docstring). `extra_files` (name -> text,
    bytes, or a function that writes the file at the path it is given) are written into it too,
    so they appear atomically with the model (e.g. the training run's best.json, an export's
    programs). `variables=None` writes no variables (an ONNX export holds them in its graphs)."""

    def fill(tmp: Path):
        for name, text in (extra_files or {}).items():
            if callable(text):
                text(tmp / name)
            else:
                (tmp / name).write_bytes(text) if isinstance(text, bytes) else (tmp / name).write_text(text)
        if gliner_only:
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in gliner_only.items()}, str(tmp / GLINER_ONLY))
        (tmp / RELEX_CONFIG).write_text(
            json.dumps({**config.to_gliner_dict(), "relex_jax_format": FORMAT_VERSION}, indent=2, sort_keys=True)
        )
        if variables is not None:
            _save_variables(tmp / VARIABLES_DIR, variables)
        if tokenizer_dir is not None:
            _copy_tokenizer(Path(tokenizer_dir), tmp)

    return _write_atomically(out, overwrite, fill)


def load_relex_dir(model_dir) -> tuple[RelexConfig, dict[str, Any]]:
    """(config, variables) of a relex-jax model directory, checked against the config."""
    import orbax.checkpoint as ocp

    model_dir = Path(model_dir)
    if not (model_dir / RELEX_CONFIG).is_file():
        raise FileNotFoundError(f"no {RELEX_CONFIG} in {model_dir}: not a relex-jax model directory")
    config = read_relex_config(model_dir)
    abstract = abstract_variables(config)
    expected = flatten_params(abstract)
    variables_dir = (model_dir / VARIABLES_DIR).absolute()
    if not variables_dir.is_dir():
        raise FileNotFoundError(f"no {VARIABLES_DIR}/ checkpoint in {model_dir}")
    stored = ocp.StandardCheckpointer().metadata(variables_dir)
    stored = flatten_params(getattr(stored, "item_metadata", stored))
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    misshaped = [p for p in set(expected) & set(stored) if tuple(stored[p].shape) != tuple(expected[p].shape)]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"{variables_dir} does not fit {RELEX_CONFIG}: missing {missing}, unexpected {unexpected}, "
            f"misshaped {sorted(misshaped)}"
        )
    target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), abstract)
    return config, ocp.StandardCheckpointer().restore(variables_dir, target)


def gliner_to_relex(src, out, overwrite: bool = False) -> Path:
    """gliner checkpoint directory (or hub id) -> relex-jax model directory."""
    config, variables, gliner_only, model_dir = read_gliner_checkpoint(src)
    return save_relex_dir(out, config, variables, model_dir, overwrite, gliner_only=gliner_only)


def relex_to_gliner(src, out, overwrite: bool = False) -> Path:
    """relex-jax model directory -> a directory `gliner.GLiNER.from_pretrained` loads."""
    from safetensors.numpy import load_file, save_file

    config, variables = load_relex_dir(src)
    aside = Path(src) / GLINER_ONLY
    state = variables_to_state_dict(variables, config, load_file(str(aside)) if aside.is_file() else None)

    def fill(tmp: Path):
        (tmp / GLINER_CONFIG).write_text(json.dumps(config.to_gliner_dict(), indent=2, sort_keys=True))
        save_file(state, str(tmp / "model.safetensors"))
        _copy_tokenizer(Path(src), tmp)

    return _write_atomically(out, overwrite, fill)
