"""The backbone configs (`DebertaConfig`, `BertConfig`) and the table that reads a `config.json`
dict by its `model_type`: plain dataclasses, importable without JAX, so a runtime that only
tokenizes and decodes can read a model's config. The Flax modules built from them live in
`deberta.py` and `bert.py` (`relex_jax.modeling.encoders` pairs each config with its module).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# The names `relex_jax.modeling.activations.ACTIVATIONS` implements (it checks it matches).
ACTIVATION_NAMES = (
    "gelu",
    "gelu_python",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "relu6",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
    "linear",
)


def check_activation(name: str) -> None:
    """Refuse an activation name we do not implement, naming the supported ones."""
    if name not in ACTIVATION_NAMES:
        raise ValueError(f"unsupported activation {name!r}; supported: {', '.join(sorted(ACTIVATION_NAMES))}")


@dataclasses.dataclass(frozen=True)
class DebertaConfig:
    """The fields of `transformers.DebertaV2Config` that change the forward pass.

    Defaults are the ones `transformers` uses when a key is missing from `config.json`
    (including the attributes the PyTorch modules read with `getattr(config, name, default)`).
    """

    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    position_biased_input: bool = True
    pos_att_type: tuple[str, ...] = ()
    share_att_key: bool = False
    norm_rel_ebd: tuple[str, ...] = ("none",)
    embedding_size: int | None = None
    attention_head_size: int | None = None
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"
    pad_token_id: int = 0

    def __post_init__(self):
        # Accept the "a|b" string form config.json files use for the two list-valued fields.
        for name in ("pos_att_type", "norm_rel_ebd"):
            value = getattr(self, name)
            if value is None:
                value = ()
            if isinstance(value, str):
                value = value.lower().split("|")
            object.__setattr__(self, name, tuple(v.strip().lower() for v in value))
        unknown = set(self.pos_att_type) - {"c2p", "p2c"}
        if unknown:
            raise ValueError(f"pos_att_type may only contain 'c2p' and 'p2c', got {sorted(unknown)}")
        if self.attention_head_size is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.conv_kernel_size > 0 and self.conv_kernel_size % 2 == 0:
            raise ValueError(
                f"conv_kernel_size must be odd (got {self.conv_kernel_size}): with an even kernel the "
                "PyTorch ConvLayer changes the sequence length and fails"
            )
        check_activation(self.hidden_act)
        check_activation(self.conv_act)

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> "DebertaConfig":
        """Build from a `config.json` dict; keys that do not affect the encoder are ignored."""
        model_type = hf.get("model_type", "deberta-v2")
        if model_type != "deberta-v2":
            raise ValueError(f"expected a DeBERTa-v2/v3 config (model_type 'deberta-v2'), got {model_type!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` fields `transformers.DebertaV2Config` reads back to this config."""
        out = dataclasses.asdict(self)
        out["pos_att_type"] = list(self.pos_att_type)
        out["norm_rel_ebd"] = "|".join(self.norm_rel_ebd)
        out["model_type"] = "deberta-v2"
        return {k: v for k, v in out.items() if v is not None}

    @property
    def head_size(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_attention_heads

    @property
    def word_embedding_size(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def max_relative_distance(self) -> int:
        """`max_relative_positions`, falling back to `max_position_embeddings` as transformers does."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def attention_span(self) -> int:
        """Half the number of relative-position embeddings an attention layer uses."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_distance

    @property
    def scale_factor(self) -> int:
        return 1 + len(set(self.pos_att_type))

    @property
    def scanned_layers_start(self) -> int:
        """First layer that `scan_layers=True` stacks: layer 0 stays apart when the conv follows it."""
        return 1 if self.conv_kernel_size > 0 else 0


# The relative-attention settings every released DeBERTa-v3 (xsmall ... large) uses.
DEBERTA_V3_ATTENTION: dict[str, Any] = dict(
    relative_attention=True,
    position_buckets=256,
    max_relative_positions=-1,
    pos_att_type="p2c|c2p",
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of `transformers.BertConfig` that change an encoder-only forward pass.

    Defaults are the ones `transformers` uses when a key is missing from `config.json`.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    def __post_init__(self):
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported: only 'absolute' "
                "BERT position embeddings are implemented (transformers 5 dropped 'relative_key' and "
                "'relative_key_query' too)"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.type_vocab_size < 1:
            raise ValueError(f"type_vocab_size must be at least 1 (BERT always adds a token-type embedding), "
                             f"got {self.type_vocab_size}")
        check_activation(self.hidden_act)

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> "BertConfig":
        """Build from a `config.json` dict; keys that do not affect the encoder are ignored."""
        model_type = hf.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"expected a BERT config (model_type 'bert'), got {model_type!r}")
        for flag in ("is_decoder", "add_cross_attention"):
            if hf.get(flag):
                raise ValueError(f"{flag}=true makes a causal / cross-attending BERT decoder; only encoders are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names}
        for name in ("pad_token_id", "position_embedding_type"):  # null in config.json: the default
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` fields `transformers.BertConfig` reads back to this config."""
        return {**dataclasses.asdict(self), "model_type": "bert"}

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_biased_input(self) -> bool:
        """BERT always adds absolute positions (DeBERTa's config makes it a choice): inputs are
        limited to `max_position_embeddings` tokens."""
        return True

    @property
    def scanned_layers_start(self) -> int:
        """First layer that `scan_layers=True` stacks (all of them; see `stack_layer_params`)."""
        return 0


ENCODER_CONFIGS: dict[str, type] = {"deberta-v2": DebertaConfig, "bert": BertConfig}
# config.json files written before `model_type` existed are DeBERTa ones.
DEFAULT_MODEL_TYPE = "deberta-v2"


def model_type(hf_config: Mapping[str, Any]) -> str:
    """The supported `model_type` of a `config.json` dict; raises `ValueError` naming the supported ones."""
    name = hf_config.get("model_type") or DEFAULT_MODEL_TYPE
    if name not in ENCODER_CONFIGS:
        raise ValueError(f"unsupported encoder model_type {name!r}; supported: {', '.join(sorted(ENCODER_CONFIGS))}")
    return name


def config_model_type(config: Any) -> str:
    """The `model_type` whose config class `config` is (a built encoder config, not a dict)."""
    for name, config_cls in ENCODER_CONFIGS.items():
        if isinstance(config, config_cls):
            return name
    raise TypeError(f"{type(config).__name__} is not the config of a supported encoder family")


def encoder_config(hf_config: Mapping[str, Any]):
    """A `config.json` dict read as its family's encoder config."""
    return ENCODER_CONFIGS[model_type(hf_config)].from_hf_dict(hf_config)
