"""relex-jax: GLiNER-Relex (joint zero-shot entity and relation extraction) in JAX/Flax."""

from relex_jax.checkpoint.hf_encoder import load_hf_encoder
from relex_jax.inference import RelexModel
from relex_jax.modeling.bert import BertConfig, BertModel
from relex_jax.modeling.deberta import DebertaConfig, DebertaV2Model

__version__ = "0.1.0"

__all__ = ["BertConfig", "BertModel", "DebertaConfig", "DebertaV2Model", "RelexModel", "load_hf_encoder", "__version__"]
