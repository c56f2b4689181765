"""The backbone families a relex model can be built on, by Hugging Face `model_type`.

This table says what to build (config and Flax module classes); the configs and the functions
that read a `config.json` by its `model_type` are JAX-free (`relex_jax.modeling.encoder_configs`,
re-exported here); how each family's PyTorch weights are read lives next to the converters
(`relex_jax.checkpoint.hf_encoder`), keyed by the same names.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from relex_jax.modeling.bert import BertModel
from relex_jax.modeling.deberta import DebertaV2Model
from relex_jax.modeling.encoder_configs import (  # noqa: F401 (re-exported)
    DEFAULT_MODEL_TYPE,
    ENCODER_CONFIGS,
    config_model_type,
    encoder_config,
    model_type,
)


@dataclasses.dataclass(frozen=True)
class EncoderClasses:
    config_cls: type
    module_cls: type[nn.Module]


ENCODERS: dict[str, EncoderClasses] = {
    name: EncoderClasses(ENCODER_CONFIGS[name], module_cls)
    for name, module_cls in (("deberta-v2", DebertaV2Model), ("bert", BertModel))
}
