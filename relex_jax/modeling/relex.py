"""The span-level GLiNER-Relex model (`UniEncoderSpanRelexModel`, released setting) in Flax.

backbone (DeBERTa-v2/v3 or BERT) -> (layer fuser) -> (H -> D projection) -> word vectors (+ BiLSTM) and prompt vectors
-> markerV0 span scores against entity prompts -> entity selection (static cap E)
-> all ordered pairs -> pair-MLP scores against relation prompts.

All sizes reach `jit` as array shapes (B, T, W, K, C, R) or the static `max_entities` (E).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from relex_jax.config import RelexConfig
from relex_jax.modeling.adjacency import AdjacencyHead
from relex_jax.modeling.encoders import ENCODERS, config_model_type
from relex_jax.modeling.layers import BiLSTM
from relex_jax.modeling.mlp import Linear, ProjectionMLP
from relex_jax.modeling.relations import (
    all_pairs_mask,
    pair_representations,
    passing_spans,
    relation_logits,
    select_entities,
)
from relex_jax.modeling.spans import SpanMarkerV0
from relex_jax.modeling.triples import TripleScorer

Dtype = Any
TRIPLES_DIM = 768


@flax.struct.dataclass
class RelexOutput:
    entity_logits: jax.Array  # (B, W, K, C)
    entity_index: jax.Array  # (B, E) flat span index l*K+k of each selected entity
    entity_mask: jax.Array  # (B, E)
    entity_count: jax.Array  # (B,) spans that passed the threshold; > E means the cap cut them
    entities: jax.Array  # (B, E, D) span representations of the selected entities (0 padding)
    pair_mask: jax.Array  # (B, E, E) scored pairs: real entities, i != j (and adjacency > threshold)
    relation_logits: jax.Array  # (B, E, E, R)
    adjacency: jax.Array | None = None  # (B, E, E) edge probabilities, with an adjacency head
    span_rep: jax.Array | None = None  # (B, W, K, D), only with materialize=True
    pair_rep: jax.Array | None = None  # (B, E, E, D), only with materialize=True and the pair MLP


@flax.struct.dataclass
class SpanScores:
    """What the relation stage needs from the span stage (`RelexModule.score_spans`)."""

    entity_logits: jax.Array  # (B, W, K, C)
    entity_count: jax.Array  # (B,) spans that pass the threshold: the cap E the relation stage needs
    span_hidden: jax.Array  # (B, W, K, 4D) the span MLP's hidden activations
    relation_prompts: jax.Array  # (B, R, D) unprojected
    words: jax.Array  # (B, W, D) word vectors (after the BiLSTM)


class LayersFuser(nn.Module):
    """Squeeze-excitation weighting of the backbone layers (`fuse_layers=True`).

    As gliner: the squeeze averages over all T positions, padding included.
    """

    num_layers: int
    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, layers):  # (B, L, T, H)
        n, h, dt, pdt = self.num_layers, self.hidden_size, self.dtype, self.param_dtype
        squeezed = Linear(h, 1, ("embed", None), dt, pdt, name="squeeze")(layers)[..., 0].mean(-1)  # (B, L)
        excite = Linear(n, n // 2, (None, None), dt, pdt, name="W1")(squeezed)
        weights = jax.nn.sigmoid(Linear(n // 2, n, (None, None), dt, pdt, name="W2")(jax.nn.relu(excite)))
        fused = jnp.einsum("bl,blth->bth", weights, layers)
        return Linear(h, h, ("embed", "embed"), dt, pdt, name="output_projection")(fused)


def pool_words(tokens, words_mask, attention_mask, num_words: int, mode: str):
    """Token vectors (B, T, D) -> word vectors (B, W, D) as gliner's `extract_word_embeddings`.

    `words_mask` holds 1-based word indices (0 = not a word token); first/last mark one token per
    word, mean/max every sub-token. Words without tokens stay 0.
    """
    batch, _, dim = tokens.shape
    valid = (words_mask > 0) & (words_mask <= num_words)
    if mode in ("mean", "max"):
        valid &= attention_mask.astype(bool)
    segment = jnp.where(valid, jnp.arange(batch)[:, None] * num_words + words_mask - 1, batch * num_words)
    segment, flat = segment.reshape(-1), tokens.reshape(-1, dim)
    segments = batch * num_words + 1  # the last one collects non-word tokens, then is dropped
    if mode == "max":
        pooled = jax.ops.segment_max(flat, segment, segments)
        counts = jax.ops.segment_sum(jnp.ones_like(segment), segment, segments)
        pooled = jnp.where(counts[:, None] > 0, pooled, 0)
    else:
        pooled = jax.ops.segment_sum(flat, segment, segments)
        if mode == "mean":
            counts = jax.ops.segment_sum(jnp.ones_like(segment), segment, segments)
            pooled = pooled / jnp.maximum(counts, 1)[:, None].astype(pooled.dtype)
    return pooled[:-1].reshape(batch, num_words, dim)


def gather_prompts(tokens, prompt_index, prompt_mask):
    """Prompt vectors (B, P, D) at token positions `prompt_index` (B, P); padded slots are 0."""
    vectors = jnp.take_along_axis(tokens, prompt_index[..., None].astype(jnp.int32), axis=1)
    return vectors * prompt_mask[..., None].astype(vectors.dtype)


class RelexModule(nn.Module):
    """The span relex model, in two stages: `score_spans` (encoder to entity logits, and how many
    spans pass per text) and `relate` (at most `max_entities` selected spans per text, all their
    pairs). When `entity_count` exceeds the cap, the selection was cut: callers that run the
    stages separately (`RelexModel.forward`) size the cap from the first stage's count."""

    config: RelexConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    def setup(self):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        enc, d = cfg.encoder, cfg.hidden_size
        backbone_cls = ENCODERS[config_model_type(enc)].module_cls  # DebertaV2Model or BertModel
        self.backbone = backbone_cls(enc, dt, pdt, remat=self.remat, scan_layers=self.scan_layers)
        if cfg.fuse_layers:
            self.layers_fuser = LayersFuser(enc.num_hidden_layers, enc.hidden_size, dt, pdt)
        if d != enc.hidden_size:
            self.projection = Linear(enc.hidden_size, d, ("embed", None), dt, pdt)
        if cfg.num_rnn_layers > 0:
            self.rnn = BiLSTM(d // 2, cfg.num_rnn_layers, dt, pdt)
        self.span_rep = SpanMarkerV0(d, cfg.max_width, cfg.dropout, dt, pdt)
        self.prompt_rep = ProjectionMLP(d, d, cfg.dropout, dt, pdt)
        if cfg.triples_layer is None:
            self.pair_rep = ProjectionMLP(2 * d, d, cfg.dropout, dt, pdt)
        else:  # gliner builds its TriplesScoreLayer at dim 768 whatever D is
            self.triples = TripleScorer(cfg.triples_layer, TRIPLES_DIM, dt, pdt)
        if cfg.has_adjacency_head:
            self.adjacency = AdjacencyHead(cfg.relations_layer, d, dt, pdt)

    def encode(self, input_ids, attention_mask, deterministic: bool = True):
        """Token vectors (B, T, D): backbone, optional layer fusion, optional projection."""
        if self.config.fuse_layers:
            _, states = self.backbone(input_ids, attention_mask, deterministic=deterministic, output_hidden_states=True)
            tokens = self.layers_fuser(jnp.stack(states[1:], axis=1))
        else:
            tokens = self.backbone(input_ids, attention_mask, deterministic=deterministic)
        if self.config.hidden_size != self.config.encoder.hidden_size:
            tokens = self.projection(tokens)
        return tokens

    def score_spans(
        self,
        input_ids,  # (B, T)
        attention_mask,  # (B, T)
        words_mask,  # (B, T) 1-based word index per token, 0 elsewhere (gliner's words_mask)
        text_lengths,  # (B,) words per text
        span_mask,  # (B, W, K) True for spans inside the text
        entity_prompt_index,  # (B, C) token positions of the entity prompt vectors
        entity_prompt_mask,  # (B, C)
        relation_prompt_index,  # (B, R)
        relation_prompt_mask,  # (B, R)
        threshold,  # scalar: entity probability a span needs to take part in relations
        deterministic: bool = True,
    ) -> SpanScores:
        """First stage: encoder, word and prompt vectors, entity logits, and how many spans per
        text pass `threshold` (what the relation stage's cap E must hold)."""
        num_words = span_mask.shape[1]
        tokens = self.encode(input_ids, attention_mask, deterministic)
        entity_prompts = self.prompt_rep(gather_prompts(tokens, entity_prompt_index, entity_prompt_mask), deterministic)
        relation_prompts = gather_prompts(tokens, relation_prompt_index, relation_prompt_mask)  # unprojected

        words = pool_words(tokens, words_mask, attention_mask, num_words, self.config.subtoken_pooling)
        if self.config.num_rnn_layers > 0:
            words = self.rnn(words, text_lengths)

        span_hidden = self.span_rep.hidden(words, span_mask, deterministic)  # (B, W, K, 4D)
        folded, offset = self.span_rep.out_project.fold_output(entity_prompts)
        entity_logits = jnp.einsum("bwkh,bhc->bwkc", span_hidden, folded) + offset[:, None, None, :]
        count = passing_spans(entity_logits, span_mask, entity_prompt_mask.astype(bool), threshold).sum((1, 2))
        return SpanScores(entity_logits, count, span_hidden, relation_prompts, words)

    def relate(
        self,
        scores: SpanScores,
        span_mask,  # (B, W, K)
        entity_prompt_mask,  # (B, C)
        threshold,
        adjacency_threshold=None,  # scalar: edge probability a pair needs (adjacency heads); default threshold
        max_entities: int = 32,  # static cap E on selected entities per row
        deterministic: bool = True,
        entity_index=None,  # (B, E) gold flat span indices l*K+k (training); replaces the selection
        entity_mask=None,  # (B, E) with entity_index
        gold_pair_mask=None,  # (B, E, E) training pairs; replaces the all-pairs / adjacency choice
    ) -> RelexOutput:
        """Second stage: select the passing spans into the cap E, score every ordered pair.

        Training (gliner with labels, spec §7, §8.2) passes the gold entities (`entity_index`,
        `entity_mask`, then E = their width and `max_entities`, `threshold` are unused) and the
        gold pairs (`gold_pair_mask`: with an adjacency head the gold adjacency off the diagonal;
        otherwise all pairs). The adjacency head still runs, on the gold entities: its output is
        what the adjacency loss scores.
        """
        if entity_index is None:
            index, entity_mask, count = select_entities(
                scores.entity_logits, span_mask, entity_prompt_mask.astype(bool), threshold, max_entities
            )
        else:
            if entity_mask is None:
                raise ValueError("entity_index needs entity_mask")
            index, entity_mask = entity_index.astype(jnp.int32), entity_mask.astype(bool)
            count = entity_mask.sum(-1)
        span_hidden = scores.span_hidden
        flat_hidden = span_hidden.reshape(span_hidden.shape[0], -1, span_hidden.shape[-1])
        selected = jnp.take_along_axis(flat_hidden, index[..., None], axis=1)  # (B, E, 4D)
        entities = self.span_rep.out_project.output(selected) * entity_mask[..., None].astype(selected.dtype)
        pair_mask = all_pairs_mask(entity_mask)
        adjacency = None
        if self.config.has_adjacency_head:
            adjacency = self.adjacency(entities, entity_mask, deterministic)
            if gold_pair_mask is None:
                edge_threshold = threshold if adjacency_threshold is None else adjacency_threshold
                pair_mask &= adjacency > edge_threshold
        if gold_pair_mask is not None:
            pair_mask &= gold_pair_mask.astype(bool)
        if self.config.triples_layer is None:
            rel_logits = relation_logits(self.pair_rep, entities, scores.relation_prompts, deterministic)
        else:
            rel_logits = self.triples(entities, scores.relation_prompts, entities, deterministic)
        return RelexOutput(scores.entity_logits, index, entity_mask, count, entities, pair_mask, rel_logits, adjacency)

    def __call__(
        self,
        input_ids,
        attention_mask,
        words_mask,
        text_lengths,
        span_mask,
        entity_prompt_index,
        entity_prompt_mask,
        relation_prompt_index,
        relation_prompt_mask,
        threshold,
        adjacency_threshold=None,
        max_entities: int = 32,
        deterministic: bool = True,
        materialize: bool = False,
    ) -> RelexOutput:
        """Both stages in one call (arguments as `score_spans` and `relate`). `materialize` also
        returns gliner's full span (and pair) representations, for tests and inspection."""
        scores = self.score_spans(
            input_ids, attention_mask, words_mask, text_lengths, span_mask, entity_prompt_index,
            entity_prompt_mask, relation_prompt_index, relation_prompt_mask, threshold, deterministic,
        )
        out = self.relate(scores, span_mask, entity_prompt_mask, threshold, adjacency_threshold, max_entities,
                          deterministic)
        if materialize:
            out = out.replace(span_rep=self.span_rep(scores.words, span_mask, deterministic))
            if self.config.triples_layer is None:
                out = out.replace(pair_rep=pair_representations(self.pair_rep, out.entities, deterministic))
        return out

    def train_outputs(
        self,
        input_ids,
        attention_mask,
        words_mask,
        text_lengths,
        span_mask,
        entity_prompt_index,
        entity_prompt_mask,
        relation_prompt_index,
        relation_prompt_mask,
        entity_index,  # (B, E) gold entities (TrainingBatch.entity_index)
        entity_mask,  # (B, E)
        gold_pair_mask,  # (B, E, E) TrainingBatch.pair_mask
        deterministic: bool = True,
    ) -> RelexOutput:
        """The training forward (gliner's forward with labels): entities are the gold spans,
        pairs the gold pairs, adjacency (with a head) predicted on the gold entities. Dropout is
        on with `deterministic=False` and an rng named "dropout"."""
        scores = self.score_spans(
            input_ids, attention_mask, words_mask, text_lengths, span_mask, entity_prompt_index,
            entity_prompt_mask, relation_prompt_index, relation_prompt_mask, jnp.float32(0.5), deterministic,
        )  # the threshold only feeds `entity_count`, which training ignores
        return self.relate(
            scores, span_mask, entity_prompt_mask, jnp.float32(0.5), None, entity_index.shape[1], deterministic,
            entity_index=entity_index, entity_mask=entity_mask, gold_pair_mask=gold_pair_mask,
        )


def example_inputs(config: RelexConfig, batch: int = 1, tokens: int = 8, words: int = 2, prompts: int = 1):
    """Smallest well-formed positional inputs for `RelexModule.init` / `jax.eval_shape`."""
    ids = jnp.zeros((batch, tokens), jnp.int32)
    words_mask = jnp.zeros((batch, tokens), jnp.int32).at[:, -words:].set(jnp.arange(1, words + 1))
    prompt_index = jnp.zeros((batch, prompts), jnp.int32)
    prompt_mask = jnp.ones((batch, prompts), bool)
    span_mask = jnp.ones((batch, words, config.max_width), bool)
    lengths = jnp.full((batch,), words, jnp.int32)
    return (ids, jnp.ones_like(ids), words_mask, lengths, span_mask, prompt_index, prompt_mask,
            prompt_index, prompt_mask, jnp.float32(0.5))
