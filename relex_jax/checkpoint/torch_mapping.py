"""PyTorch state dict -> Flax params tree, through declarative module tables.

A table lists PyTorch *modules* (a regex on the dotted module path), the Flax path they become
(a template filled with the regex groups) and the module kind. The kind fixes the leaf names and
the array transform, e.g. a `nn.Linear` weight (out, in) becomes a Dense `kernel` (in, out).
Every key must be mapped or explicitly ignored, and every expected Flax leaf must be filled,
with the right shape; otherwise `convert_state_dict` raises naming all offending keys at once.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModuleKind:
    """How one PyTorch module type's tensors become Flax leaves: torch leaf -> (flax leaf, transform)."""

    name: str
    leaves: Mapping[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]


def _same(x):
    return x


LINEAR = ModuleKind("linear", {"weight": ("kernel", np.transpose), "bias": ("bias", _same)})
EMBEDDING = ModuleKind("embedding", {"weight": ("embedding", _same)})
# Old checkpoints name LayerNorm parameters gamma/beta; transformers renames them on load.
LAYER_NORM = ModuleKind(
    "layer_norm",
    {"weight": ("scale", _same), "bias": ("bias", _same), "gamma": ("scale", _same), "beta": ("bias", _same)},
)
# torch Conv1d weight (out, in/groups, k) -> flax Conv kernel (k, in/groups, out).
CONV1D = ModuleKind("conv1d", {"weight": ("kernel", lambda w: np.transpose(w, (2, 1, 0))), "bias": ("bias", _same)})


@dataclasses.dataclass(frozen=True)
class ModuleRule:
    torch: str  # regex matched against the whole dotted module path
    flax: str  # "/"-separated template; {0}, {1}, ... are the regex groups
    kind: ModuleKind


_LAYER = r"encoder\.layer\.(\d+)"

DEBERTA_V2_RULES: tuple[ModuleRule, ...] = (
    ModuleRule(r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)", "embeddings/{0}", EMBEDDING),
    ModuleRule(r"embeddings\.embed_proj", "embeddings/embed_proj", LINEAR),
    ModuleRule(r"embeddings\.LayerNorm", "embeddings/LayerNorm", LAYER_NORM),
    ModuleRule(r"encoder\.rel_embeddings", "encoder/rel_embeddings", EMBEDDING),
    ModuleRule(r"encoder\.LayerNorm", "encoder/LayerNorm", LAYER_NORM),
    ModuleRule(r"encoder\.conv\.conv", "encoder/conv/conv", CONV1D),
    ModuleRule(r"encoder\.conv\.LayerNorm", "encoder/conv/LayerNorm", LAYER_NORM),
    ModuleRule(
        _LAYER + r"\.attention\.self\.(query_proj|key_proj|value_proj|pos_key_proj|pos_query_proj)",
        "encoder/layer_{0}/attention/self/{1}",
        LINEAR,
    ),
    ModuleRule(_LAYER + r"\.attention\.output\.dense", "encoder/layer_{0}/attention/output/dense", LINEAR),
    ModuleRule(_LAYER + r"\.attention\.output\.LayerNorm", "encoder/layer_{0}/attention/output/LayerNorm", LAYER_NORM),
    ModuleRule(_LAYER + r"\.intermediate\.dense", "encoder/layer_{0}/intermediate/dense", LINEAR),
    ModuleRule(_LAYER + r"\.output\.dense", "encoder/layer_{0}/output/dense", LINEAR),
    ModuleRule(_LAYER + r"\.output\.LayerNorm", "encoder/layer_{0}/output/LayerNorm", LAYER_NORM),
)


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model: lists every unexpected, missing or misshaped key."""


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _map_key(key: str, rules: Iterable[ModuleRule]) -> tuple[str, Callable] | None:
    module, _, leaf = key.rpartition(".")
    for rule in rules:
        match = re.fullmatch(rule.torch, module)
        if match and leaf in rule.kind.leaves:
            flax_leaf, transform = rule.kind.leaves[leaf]
            return rule.flax.format(*match.groups()) + "/" + flax_leaf, transform
    return None


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    rules: Iterable[ModuleRule],
    expected_shapes: Mapping[str, tuple[int, ...]],
    dtype=np.float32,
) -> dict[str, Any]:
    """Map `state_dict` onto the flat `expected_shapes` ({"a/b": shape}); return nested params.

    The caller strips prefixes and drops keys it deliberately ignores before calling.
    """
    rules = tuple(rules)
    flat, unexpected, misshaped = {}, [], []
    for key, tensor in state_dict.items():
        mapped = _map_key(key, rules)
        if mapped is None or mapped[0] not in expected_shapes:
            unexpected.append(key)
            continue
        path, transform = mapped
        value = np.asarray(transform(np.asarray(tensor))).astype(dtype)
        if tuple(value.shape) != tuple(expected_shapes[path]):
            misshaped.append(f"{key} -> {path}: checkpoint {value.shape}, model {tuple(expected_shapes[path])}")
            continue
        if path in flat:
            unexpected.append(f"{key} (a second tensor for {path})")
            continue
        flat[path] = value
    missing = sorted(set(expected_shapes) - set(flat) - {m.split(" -> ")[1].split(":")[0] for m in misshaped})
    problems = []
    if unexpected:
        problems.append(f"unexpected checkpoint keys: {sorted(unexpected)}")
    if missing:
        problems.append(f"model parameters missing from the checkpoint: {missing}")
    if misshaped:
        problems.append(f"shape mismatches: {misshaped}")
    if problems:
        raise CheckpointMismatchError("; ".join(problems))
    return unflatten_params(flat)
