"""The backbone families a relex model can be built on, by Hugging Face `model_type`.

This table says what to build (config and Flax module classes); how each family's PyTorch
weights are read lives next to the converters (`relex_jax.checkpoint.hf_encoder`), keyed by the
same names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn

from relex_jax.modeling.bert import BertConfig, BertModel
from relex_jax.modeling.deberta import DebertaConfig, DebertaV2Model


@dataclasses.dataclass(frozen=True)
class EncoderClasses:
    config_cls: type
    module_cls: type[nn.Module]


ENCODERS: dict[str, EncoderClasses] = {
    "deberta-v2": EncoderClasses(DebertaConfig, DebertaV2Model),
    "bert": EncoderClasses(BertConfig, BertModel),
}
# config.json files written before `model_type` existed are DeBERTa ones.
DEFAULT_MODEL_TYPE = "deberta-v2"


def model_type(hf_config: Mapping[str, Any]) -> str:
    """The supported `model_type` of a `config.json` dict; raises `ValueError` naming the supported ones."""
    name = hf_config.get("model_type") or DEFAULT_MODEL_TYPE
    if name not in ENCODERS:
        raise ValueError(f"unsupported encoder model_type {name!r}; supported: {', '.join(sorted(ENCODERS))}")
    return name


def config_model_type(config: Any) -> str:
    """The `model_type` whose config class `config` is (a built encoder config, not a dict)."""
    for name, classes in ENCODERS.items():
        if isinstance(config, classes.config_cls):
            return name
    raise TypeError(f"{type(config).__name__} is not the config of a supported encoder family")


def encoder_config(hf_config: Mapping[str, Any]):
    """A `config.json` dict read as its family's encoder config."""
    return ENCODERS[model_type(hf_config)].config_cls.from_hf_dict(hf_config)
