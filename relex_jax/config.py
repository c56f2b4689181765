"""`RelexConfig`: the gliner span-relex configuration fields our model reads.

`from_gliner_dict` accepts a `gliner_config.json` dict; every field we do not interpret is kept
verbatim in `extra`, so `to_gliner_dict` writes back what gliner wrote. The backbone config
(`encoder_config`) is read by its `model_type` (`relex_jax.modeling.encoder_configs`). Nothing here
imports JAX: a runtime without it reads model configs too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from relex_jax.modeling.encoder_configs import BertConfig, DebertaConfig, encoder_config

# The adjacency heads (`relex_jax.modeling.adjacency`) and triple scorers (`...modeling.triples`)
# by gliner's names; kept here so the config reads without JAX.
ADJACENCY_MODES = ("dot", "mlp", "attention", "bilinear", "gcn", "gat")
TRIPLES_MODES = (
    "UM", "SE", "TransE", "TransH", "TransF", "PairRE", "TripleRE",
    "DistMult", "SimplE", "DistMA", "ComplEx", "QuatE", "HolE",
    "TuckER", "ERMLP", "ConvKB",
)  # fmt: skip

PARAMETRIC_TRIPLES = ("TransH", "TransF", "PairRE", "TripleRE", "TuckER", "ERMLP", "ConvKB")

SUBTOKEN_POOLING = ("first", "last", "mean", "max")


@dataclasses.dataclass(frozen=True)
class RelexConfig:
    encoder: DebertaConfig | BertConfig  # the backbone's config, of a family in ENCODERS
    hidden_size: int = 512  # D, the GLiNER width; a Linear(H -> D) follows the backbone when D != H
    dropout: float = 0.4
    max_width: int = 12  # K
    span_mode: str = "markerV0"
    num_rnn_layers: int = 1
    fuse_layers: bool = False
    subtoken_pooling: str = "first"
    embed_ent_token: bool = True
    embed_rel_token: bool = True
    ent_token: str = "<<ENT>>"
    sep_token: str = "<<SEP>>"
    rel_token: str = "<<REL>>"
    class_token_index: int = -1
    rel_token_index: int = -1
    vocab_size: int = -1
    relations_layer: str | None = "none"
    triples_layer: str | None = None
    max_len: int = 384
    words_splitter_type: str = "whitespace"
    span_encoder_config: Any = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unsupported = []
        if self.span_mode != "markerV0":
            unsupported.append(f"span_mode={self.span_mode!r} (only 'markerV0', the released setting)")
        if self.relations_layer is None:
            unsupported.append("relations_layer=None (a plain NER model, not GLiNER-Relex)")
        elif self.relations_layer.lower() not in ("none", *ADJACENCY_MODES, "attn"):
            unsupported.append(
                f"relations_layer={self.relations_layer!r} (one of 'none', {', '.join(ADJACENCY_MODES)}, 'attn')"
            )
        if self.triples_layer is not None:
            if self.triples_layer not in TRIPLES_MODES:
                unsupported.append(f"triples_layer={self.triples_layer!r} (one of {', '.join(TRIPLES_MODES)})")
            elif self.triples_layer in PARAMETRIC_TRIPLES and self.hidden_size != 768:
                unsupported.append(
                    f"triples_layer={self.triples_layer!r} with hidden_size {self.hidden_size}: gliner builds this "
                    "scorer's weights for 768-wide vectors, so it only runs with hidden_size 768"
                )
        if self.span_encoder_config is not None:
            unsupported.append("span_encoder_config (a context encoder inside the span layer)")
        if self.subtoken_pooling not in SUBTOKEN_POOLING:
            unsupported.append(f"subtoken_pooling={self.subtoken_pooling!r} (one of {', '.join(SUBTOKEN_POOLING)})")
        if self.num_rnn_layers < 0 or self.max_width < 1 or self.hidden_size < 1:
            unsupported.append("num_rnn_layers >= 0, max_width >= 1 and hidden_size >= 1 are required")
        if unsupported:
            raise ValueError("unsupported GLiNER-Relex configuration: " + "; ".join(unsupported))

    @property
    def has_adjacency_head(self) -> bool:
        """gliner's `relations_layer` names an adjacency head ("none" = score all pairs)."""
        return self.relations_layer is not None and self.relations_layer.lower() != "none"

    @classmethod
    def from_gliner_dict(cls, raw: Mapping[str, Any]) -> "RelexConfig":
        """Read a `gliner_config.json` dict (its `encoder_config` must be a full backbone config)."""
        encoder = raw.get("encoder_config")
        if not isinstance(encoder, Mapping):
            raise ValueError(
                "gliner_config.json has no encoder_config dict; configs saved by gliner always carry one"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"encoder", "extra"}
        known = {k: raw[k] for k in names if k in raw}
        extra = {k: v for k, v in raw.items() if k not in names}  # keeps the raw encoder_config too
        try:
            encoder = encoder_config(encoder)
        except ValueError as err:
            raise ValueError(f"gliner_config.json encoder_config: {err}") from None
        return cls(encoder=encoder, extra=extra, **known)

    def to_gliner_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for field in dataclasses.fields(self):
            if field.name not in ("encoder", "extra"):
                out[field.name] = getattr(self, field.name)
        # The backbone config as read (it cannot have changed: the config is frozen), else ours.
        out["encoder_config"] = self.extra.get("encoder_config") or self.encoder.to_hf_dict()
        return out


# A relex-jax model directory's config file (`relex_jax.checkpoint.convert`): gliner's config
# fields plus `relex_jax_format`.
RELEX_CONFIG = "relex_config.json"
FORMAT_VERSION = 1


def read_relex_config(model_dir: str | Path) -> RelexConfig:
    raw = json.loads((Path(model_dir) / RELEX_CONFIG).read_text())
    version = raw.pop("relex_jax_format", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{model_dir} has relex_jax_format {version!r}; this relex-jax reads {FORMAT_VERSION}")
    return RelexConfig.from_gliner_dict(raw)
