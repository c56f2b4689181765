"""relex-jax: GLiNER-Relex (joint zero-shot entity and relation extraction) in JAX/Flax.

The public names are imported on first use (PEP 562), so `import relex_jax` and the JAX-free
modules under it (the processor, labels, decoder, settings and configs) work where JAX is not
installed, e.g. in a runtime that runs an exported model.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "BertConfig": "relex_jax.modeling.encoder_configs",
    "BertModel": "relex_jax.modeling.bert",
    "DebertaConfig": "relex_jax.modeling.encoder_configs",
    "DebertaV2Model": "relex_jax.modeling.deberta",
    "RelexModel": "relex_jax.inference",
    "load_hf_encoder": "relex_jax.checkpoint.hf_encoder",
}

__all__ = ["BertConfig", "BertModel", "DebertaConfig", "DebertaV2Model", "RelexModel", "load_hf_encoder", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'relex_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
