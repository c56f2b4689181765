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

    def lookup(self, leaf: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
        """(Flax leaf, transform) for a torch leaf name, or None if this kind has no such leaf.

        `leaves` keys are regexes on the torch leaf name; their groups fill the Flax leaf
        template, which may be a sub-path (nn.LSTM's `weight_ih_l1` -> `layer_1/forward/...`).
        """
        for pattern, (flax_leaf, transform) in self.leaves.items():
            match = re.fullmatch(pattern, leaf)
            if match:
                return flax_leaf.format(*match.groups()), transform
        return None


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

# What DeBERTa and BERT share: the embedding tables and LayerNorm, and every block's attention
# output, intermediate and output sublayers (the same PyTorch module tree in both).
_SHARED_ENCODER_RULES: tuple[ModuleRule, ...] = (
    ModuleRule(r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)", "embeddings/{0}", EMBEDDING),
    ModuleRule(r"embeddings\.LayerNorm", "embeddings/LayerNorm", LAYER_NORM),
    ModuleRule(_LAYER + r"\.attention\.output\.dense", "encoder/layer_{0}/attention/output/dense", LINEAR),
    ModuleRule(_LAYER + r"\.attention\.output\.LayerNorm", "encoder/layer_{0}/attention/output/LayerNorm", LAYER_NORM),
    ModuleRule(_LAYER + r"\.intermediate\.dense", "encoder/layer_{0}/intermediate/dense", LINEAR),
    ModuleRule(_LAYER + r"\.output\.dense", "encoder/layer_{0}/output/dense", LINEAR),
    ModuleRule(_LAYER + r"\.output\.LayerNorm", "encoder/layer_{0}/output/LayerNorm", LAYER_NORM),
)

# `transformers.DebertaV2Model` -> `relex_jax.modeling.deberta.DebertaV2Model`.
DEBERTA_V2_RULES: tuple[ModuleRule, ...] = (
    *_SHARED_ENCODER_RULES,
    ModuleRule(r"embeddings\.embed_proj", "embeddings/embed_proj", LINEAR),
    ModuleRule(r"encoder\.rel_embeddings", "encoder/rel_embeddings", EMBEDDING),
    ModuleRule(r"encoder\.LayerNorm", "encoder/LayerNorm", LAYER_NORM),
    ModuleRule(r"encoder\.conv\.conv", "encoder/conv/conv", CONV1D),
    ModuleRule(r"encoder\.conv\.LayerNorm", "encoder/conv/LayerNorm", LAYER_NORM),
    ModuleRule(
        _LAYER + r"\.attention\.self\.(query_proj|key_proj|value_proj|pos_key_proj|pos_query_proj)",
        "encoder/layer_{0}/attention/self/{1}",
        LINEAR,
    ),
)

# `transformers.BertModel` (its pooler is dropped by the loader) -> `relex_jax.modeling.bert.BertModel`,
# whose attention projections carry DeBERTa's `_proj` names.
BERT_RULES: tuple[ModuleRule, ...] = (
    *_SHARED_ENCODER_RULES,
    ModuleRule(_LAYER + r"\.attention\.self\.(query|key|value)", "encoder/layer_{0}/attention/self/{1}_proj", LINEAR),
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
        found = rule.kind.lookup(leaf) if match else None
        if found is not None:
            flax_leaf, transform = found
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
        value = np.asarray(transform(np.asarray(tensor))).astype(dtype, copy=False)  # views stay views
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


# ----------------------------------------------------------------------------------------------
# Bidirectional `nn.LSTM` (any number of layers) -> `relex_jax.modeling.layers.BiLSTM`.

_LSTM_TENSORS = {
    "weight_ih": ("input_kernel", np.transpose),
    "weight_hh": ("hidden_kernel", np.transpose),
    "bias_ih": ("input_bias", _same),
    "bias_hh": ("hidden_bias", _same),
}
# Gate order [i, f, g, o] is the same on both sides and both biases are kept, so every tensor
# round-trips exactly (the inverse transforms are the transforms themselves).
BILSTM = ModuleKind(
    "bilstm",
    {
        rf"{torch_name}_l(\d+){suffix}": (f"layer_{{0}}/{direction}/{flax_name}", transform)
        for torch_name, (flax_name, transform) in _LSTM_TENSORS.items()
        for suffix, direction in (("", "forward"), ("_reverse", "backward"))
    },
)
# gliner's `rnn` (LstmSeq2SeqEncoder) holds the LSTM as `rnn.lstm`; the Flax BiLSTM is `rnn`.
BILSTM_RULES: tuple[ModuleRule, ...] = (ModuleRule(r"rnn\.lstm", "rnn", BILSTM),)


# ----------------------------------------------------------------------------------------------
# gliner span relex (`UniEncoderSpanRelexModel`) -> `relex_jax.modeling.relex.RelexModule`.


def prefixed(rules: Iterable[ModuleRule], torch_prefix: str, flax_prefix: str) -> tuple[ModuleRule, ...]:
    """The same rules for a module nested under `torch_prefix` (torch) / `flax_prefix` (Flax)."""
    return tuple(ModuleRule(re.escape(torch_prefix) + r.torch, flax_prefix + r.flax, r.kind) for r in rules)


def _projection_mlp(torch_module: str, flax_module: str) -> tuple[ModuleRule, ...]:
    """gliner's `create_projection_layer` Sequential: Linear `.0` -> `hidden`, Linear `.3` -> `output`."""
    return (
        ModuleRule(torch_module + r"\.0", flax_module + "/hidden", LINEAR),
        ModuleRule(torch_module + r"\.3", flax_module + "/output", LINEAR),
    )


# gliner's backbone (`token_rep_layer.bert_layer.model`) becomes `backbone`, under its family's rules.
GLINER_BACKBONE_PREFIX = "token_rep_layer.bert_layer.model."

# Everything in gliner's span relex model that is not the backbone or an optional head.
_RELEX_HEAD_RULES: tuple[ModuleRule, ...] = (
    ModuleRule(
        r"token_rep_layer\.bert_layer\.layers_fuser\.(squeeze|W1|W2|output_projection)", "layers_fuser/{0}", LINEAR
    ),
    ModuleRule(r"token_rep_layer\.projection", "projection", LINEAR),
    *BILSTM_RULES,
    *_projection_mlp(r"span_rep_layer\.span_rep_layer\.(project_start|project_end|out_project)", "span_rep/{0}"),
    *_projection_mlp(r"prompt_rep_layer", "prompt_rep"),
    *_projection_mlp(r"pair_rep_layer", "pair_rep"),
)


def relex_rules(encoder_rules: Iterable[ModuleRule]) -> tuple[ModuleRule, ...]:
    """The relex model's rules on a backbone read by `encoder_rules` (its family's table).

    A function of the family, not one merged table: BERT's `attention.self.query` and DeBERTa's
    `attention.self.query_proj` both become Flax `query_proj`, so Flax -> torch needs the family.
    """
    return (*prefixed(encoder_rules, GLINER_BACKBONE_PREFIX, "backbone/"), *_RELEX_HEAD_RULES)


# gliner constructs a CrossFuser when `post_fusion_schema` is set but never calls it.
RELEX_UNUSED_KEYS = (r"cross_fuser\..*",)


# ----------------------------------------------------------------------------------------------
# The reverse direction: Flax params -> torch state dict, through the same tables. Every transform
# above is its own inverse (transposes, a self-inverse axis permutation, identity), and a rule's
# torch regex is literals plus capture groups, so it reads back as a template.


def _regex_template(pattern: str) -> tuple[str, list[str]]:
    """`a\\.(\\d+)\\.b` -> ("a.{0}.b", [r"\\d+"]): a rule regex as a format template plus its groups."""
    template, groups, i = [], [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            template.append(pattern[i + 1])
            i += 2
        elif char == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            template.append("{%d}" % len(groups))
            groups.append(pattern[i + 1 : j - 1])
            i = j
        elif char in ".^$*+?{}[]|)":
            raise ValueError(f"rule regex {pattern!r} is not literals and groups; it cannot be reversed")
        else:
            template.append(char)
            i += 1
    return "".join(template), groups


def _template_regex(template: str, groups: list[str]) -> str:
    """Inverse of `_regex_template` for the Flax side: escape literals, put the groups back."""
    parts = re.split(r"\{(\d+)\}", template)
    return "".join(re.escape(p) if k % 2 == 0 else f"({groups[int(p)]})" for k, p in enumerate(parts))


def _reverse_map(path: str, rules: Iterable[ModuleRule]) -> tuple[str, Callable] | None:
    for rule in rules:
        module_template, module_groups = _regex_template(rule.torch)
        module_regex = _template_regex(rule.flax, module_groups)
        for leaf_pattern, (flax_leaf, transform) in rule.kind.leaves.items():
            leaf_template, leaf_groups = _regex_template(leaf_pattern)
            shifted = re.sub(r"\{(\d+)\}", lambda m: "{%d}" % (int(m.group(1)) + len(module_groups)), flax_leaf)
            match = re.fullmatch(module_regex + "/" + _template_regex(shifted, module_groups + leaf_groups), path)
            if match:
                values = match.groups()
                key = module_template.format(*values[: len(module_groups)])
                return key + "." + leaf_template.format(*values[len(module_groups) :]), transform
    return None


def to_state_dict(params: Mapping[str, Any], rules: Iterable[ModuleRule]) -> dict[str, np.ndarray]:
    """Flax params -> torch-named numpy tensors; raises naming every leaf no rule covers."""
    rules = tuple(rules)
    state, unmapped = {}, []
    for path, value in flatten_params(params).items():
        mapped = _reverse_map(path, rules)
        if mapped is None:
            unmapped.append(path)
            continue
        key, transform = mapped
        state[key] = np.ascontiguousarray(transform(np.asarray(value)))
    if unmapped:
        raise CheckpointMismatchError(f"parameters with no torch name: {sorted(unmapped)}")
    return state


# ----------------------------------------------------------------------------------------------
# gliner's adjacency head (`relations_rep_layer.relation_rep_layer`, any mode)
# -> `relex_jax.modeling.adjacency.AdjacencyHead` at `adjacency`.

# nn.MultiheadAttention keeps its packed q|k|v projection as leaves of the module itself
# (`in_proj_weight` (3D, D), `in_proj_bias`); Flax holds them as one Linear `in_proj` (D, 3D).
MULTIHEAD_ATTENTION = ModuleKind(
    "multihead_attention",
    {"in_proj_weight": ("in_proj/kernel", np.transpose), "in_proj_bias": ("in_proj/bias", _same)},
)
ADJACENCY_RULES: tuple[ModuleRule, ...] = prefixed(
    (
        ModuleRule(r"mlp\.0", "mlp_hidden", LINEAR),
        ModuleRule(r"mlp\.2", "mlp_output", LINEAR),
        ModuleRule(r"attn", "attn", MULTIHEAD_ATTENTION),
        ModuleRule(r"attn\.out_proj", "attn/out_proj", LINEAR),
        ModuleRule(r"gcn\.linear", "gcn_linear", LINEAR),
        ModuleRule(r"(proj|linear)", "{0}", LINEAR),
    ),
    "relations_rep_layer.relation_rep_layer.",
    "adjacency/",
)


# ----------------------------------------------------------------------------------------------
# gliner's `triples_score_layer.interaction` (TriplesScoreLayer, any mode)
# -> `relex_jax.modeling.triples.TripleScorer` at `triples`.
#
# TuckER's BatchNorm1d buffers belong in Flax's `batch_stats` collection, not in `params`:
# `relex_jax.checkpoint.gliner` routes them (split_batch_norm_buffers + TRIPLES_BATCH_STATS_RULES).
TUCKER_CORE = ModuleKind("tucker_core", {"W": ("W", _same)})  # a bare nn.Parameter on the module
BATCH_NORM = ModuleKind("batch_norm", {"weight": ("scale", _same), "bias": ("bias", _same)})
BATCH_NORM_STATS = ModuleKind("batch_norm_stats", {"running_mean": ("mean", _same), "running_var": ("var", _same)})
TRIPLES_RULES: tuple[ModuleRule, ...] = (
    ModuleRule(r"triples_score_layer\.interaction", "triples", TUCKER_CORE),
    *prefixed(
        (
            ModuleRule(r"r_to_(rtr|w|rvec|alpha|beta|delta|gamma)", "r_to_{0}", LINEAR),
            ModuleRule(r"bn(0|1)", "bn{0}", BATCH_NORM),
            ModuleRule(r"mlp\.0", "mlp_hidden", LINEAR),
            ModuleRule(r"mlp\.2", "mlp_output", LINEAR),
            ModuleRule(r"conv", "conv", CONV1D),
            ModuleRule(r"fc", "fc", LINEAR),
        ),
        "triples_score_layer.interaction.",
        "triples/",
    ),
)
TRIPLES_BATCH_STATS_RULES: tuple[ModuleRule, ...] = prefixed(
    (ModuleRule(r"bn(0|1)", "bn{0}", BATCH_NORM_STATS),), "triples_score_layer.interaction.", "triples/"
)


def split_batch_norm_buffers(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(everything else, running_mean/running_var tensors); num_batches_tracked is dropped."""
    rest, stats = {}, {}
    for key, value in state_dict.items():
        leaf = key.rpartition(".")[2]
        if leaf != "num_batches_tracked":
            (stats if leaf in ("running_mean", "running_var") else rest)[key] = value
    return rest, stats


def gliner_param_rules(encoder_rules: Iterable[ModuleRule]) -> tuple[ModuleRule, ...]:
    """Everything in a gliner span-relex checkpoint that lands in the `params` collection."""
    return (*relex_rules(encoder_rules), *ADJACENCY_RULES, *TRIPLES_RULES)
