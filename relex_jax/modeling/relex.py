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
    span_hidden: jax.Array  # (B, W, K, 4D) the span MLP's hidden activations, or (F, K, 4D) with word_start
    relation_prompts: jax.Array  # (B, R, D) unprojected
    words: jax.Array  # (B, W, D) word vectors (after the BiLSTM)
    word_start: jax.Array | None = None  # (B,) span_hidden over a word list: where each text's words start
    entity_prompts: jax.Array | None = None  # (B, C, D) projected, only with keep_prompts=True


@flax.struct.dataclass
class Vectors:
    """gliner's vector outputs (`return_vectors`, `return_label_vectors`) for decoded results
    (`RelexModule.vectors`): S entities and P relations per text, None where not asked."""

    entity: jax.Array | None = None  # (B, S, D) span representations, gliner's span_rep
    entity_label: jax.Array | None = None  # (B, S, D) projected entity prompts
    relation: jax.Array | None = None  # (B, P, D) pair representations (pair MLP)
    relation_head: jax.Array | None = None  # (B, P, D) head span representations (triples scorers) ...
    relation_tail: jax.Array | None = None  # (B, P, D) ... and tail
    relation_label: jax.Array | None = None  # (B, P, D) unprojected relation prompts


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


def word_slots(words_mask, token_texts, num_texts: int, num_words: int):
    """The flat word slot n*W + w of each token in the (N, W) word grid; N*W marks tokens of no word.

    `words_mask` (rows, T) is gliner's 1-based word index per selected token (0 elsewhere),
    `token_texts` (rows, T) the text each token belongs to: the row itself without packing,
    the text slot of its segment in packed rows.
    """
    valid = (words_mask > 0) & (words_mask <= num_words)
    return jnp.where(valid, token_texts * num_words + words_mask - 1, num_texts * num_words)


def pool_words(tokens, slots, num_texts: int, num_words: int, mode: str):
    """Token vectors (rows, T, D) -> word vectors (num_texts, W, D) as gliner's `extract_word_embeddings`.

    `slots` (rows, T): the flat word slot of each token (`word_slots`), num_texts*W for none.
    first/last pick one token per word, mean/max every sub-token. Words without tokens stay 0.
    """
    dim = tokens.shape[-1]
    segment, flat = slots.reshape(-1), tokens.reshape(-1, dim)
    segments = num_texts * num_words + 1  # the last one collects non-word tokens, then is dropped
    if mode == "max":
        pooled = jax.ops.segment_max(flat, segment, segments)
        counts = jax.ops.segment_sum(jnp.ones_like(segment), segment, segments)
        pooled = jnp.where(counts[:, None] > 0, pooled, 0)
    else:
        pooled = jax.ops.segment_sum(flat, segment, segments)
        if mode == "mean":
            counts = jax.ops.segment_sum(jnp.ones_like(segment), segment, segments)
            pooled = pooled / jnp.maximum(counts, 1)[:, None].astype(pooled.dtype)
    return pooled[:-1].reshape(num_texts, num_words, dim)


def pool_row_words(tokens, words_mask, num_words: int, mode: str):
    """`pool_words` for one text per row (`score_spans`), as a contraction with a (B, T, W) one-hot
    of the words instead of a segment sum, whose scatter ONNX converters cannot express with
    symbolic sizes (`RelexModule.exportable`). first, last and mean; max has no such form here."""
    if mode == "max":
        raise ValueError("subtoken_pooling='max' cannot be exported yet (ONNX): first, last and mean can")
    hits = (words_mask[:, :, None] == jax.lax.iota(jnp.int32, num_words)[None, None, :] + 1).astype(tokens.dtype)
    pooled = jnp.einsum("btw,btd->bwd", hits, tokens)
    if mode == "mean":
        pooled = pooled / jnp.maximum(hits.sum(1), 1)[..., None]
    return pooled


def gather_prompts(tokens, flat_index, prompt_mask):
    """Prompt vectors (N, P, D) at flat positions `flat_index` (N, P) of the (rows*T) token grid;
    padded slots are 0."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    vectors = jnp.take(flat, flat_index.astype(jnp.int32), axis=0)
    return vectors * prompt_mask[..., None].astype(vectors.dtype)


def span_hidden_at(scores: SpanScores, index):
    """The span MLP's hidden activations (B, N, 4D) at flat span indices l*K+k (B, N) of each text."""
    hidden = scores.span_hidden
    if scores.word_start is None:
        flat = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
        return jnp.take_along_axis(flat, index[..., None], axis=1)
    # span l*K+k of text b is row (word_start[b] + l)*K + k of the word list's spans
    rows = index + scores.word_start[:, None].astype(index.dtype) * hidden.shape[-2]
    return jnp.take(hidden.reshape(-1, hidden.shape[-1]), rows, axis=0, mode="clip")


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
    # Formulations ONNX converters can express, in place of the jitted path's, which stays as it
    # was: entity selection without a scatter (measured slower under jit:
    # benchmarks/select_entities.py), word pooling as a contraction, one pair-score einsum (no
    # chunks: memory grows as E^2), DeBERTa's relative shift as a gather, HolE's spectrum as a
    # contraction. Same outputs up to float rounding. Set by `relex_jax.export` only.
    exportable: bool = False

    def setup(self):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        enc, d = cfg.encoder, cfg.hidden_size
        backbone_cls = ENCODERS[config_model_type(enc)].module_cls  # DebertaV2Model or BertModel
        self.backbone = backbone_cls(enc, dt, pdt, remat=self.remat, scan_layers=self.scan_layers,
                                     exportable=self.exportable)
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
            self.triples = TripleScorer(cfg.triples_layer, TRIPLES_DIM, dt, pdt, exportable=self.exportable)
        if cfg.has_adjacency_head:
            self.adjacency = AdjacencyHead(cfg.relations_layer, d, dt, pdt)

    def encode(self, input_ids, attention_mask, deterministic: bool = True, segment_ids=None, position_ids=None):
        """Token vectors (B, T, D): backbone, optional layer fusion, optional projection.
        Packed rows pass `segment_ids` and `position_ids` instead of `attention_mask`."""
        packed = {} if segment_ids is None else {"segment_ids": segment_ids, "position_ids": position_ids}
        if self.config.fuse_layers:
            if packed:  # the fuser's squeeze averages over a whole row: it would mix the examples
                raise ValueError("packed rows are not supported with fuse_layers=True")
            _, states = self.backbone(input_ids, attention_mask, deterministic=deterministic, output_hidden_states=True)
            tokens = self.layers_fuser(jnp.stack(states[1:], axis=1))
        else:
            tokens = self.backbone(input_ids, attention_mask, deterministic=deterministic, **packed)
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
        keep_prompts: bool = False,  # also return the projected entity prompts (label vectors)
    ) -> SpanScores:
        """First stage: encoder, word and prompt vectors, entity logits, and how many spans per
        text pass `threshold` (what the relation stage's cap E must hold). One text per row."""
        batch, seq_len = input_ids.shape
        tokens = self.encode(input_ids, attention_mask, deterministic)
        rows = jnp.broadcast_to(jax.lax.iota(jnp.int32, batch)[:, None], words_mask.shape)
        if self.config.subtoken_pooling in ("mean", "max"):  # every sub-token counts: only attended ones
            words_mask = jnp.where(attention_mask.astype(bool), words_mask, 0)
        row_start = (jax.lax.iota(jnp.int32, batch) * seq_len)[:, None]
        return self._score_tokens(
            tokens, words_mask, rows, text_lengths, span_mask, entity_prompt_index + row_start, entity_prompt_mask,
            relation_prompt_index + row_start, relation_prompt_mask, threshold, deterministic, keep_prompts=keep_prompts,
        )

    def score_packed_spans(
        self,
        input_ids,  # (rows, T) several texts per row
        segment_ids,  # (rows, T) 1, 2, ... per text in the row, 0 = padding
        position_ids,  # (rows, T) token position within its text
        words_mask,  # (rows, T) gliner's 1-based word index within its text, 0 elsewhere
        token_texts,  # (rows, T) the text slot (0..N-1) of each token
        text_lengths,  # (N,) words per text; 0 for unused text slots
        span_mask,  # (N, W, K)
        entity_prompt_index,  # (N, C) flat positions r*T + t in the token grid
        entity_prompt_mask,  # (N, C)
        relation_prompt_index,  # (N, R)
        relation_prompt_mask,  # (N, R)
        threshold,
        deterministic: bool = True,
        word_texts=None,  # (F,) the texts' words end to end: text slot of each (N = none) ...
        word_positions=None,  # (F,) ... and its index in its text (`relex_jax.data.packing.word_list`)
        keep_prompts: bool = False,
    ) -> SpanScores:
        """`score_spans` on packed rows (`relex_jax.data.packing.PackedBatch`): the encoder runs
        on the (rows, T) grid with block-diagonal attention, then everything is per text (N),
        except, with a word list, the span stage (`_flat_span_scores`)."""
        if self.exportable:
            raise ValueError("packed rows are not exported (RelexModule.exportable)")
        tokens = self.encode(input_ids, None, deterministic, segment_ids, position_ids)
        flat = None if word_texts is None else (word_texts, word_positions)
        return self._score_tokens(
            tokens, words_mask, token_texts, text_lengths, span_mask, entity_prompt_index, entity_prompt_mask,
            relation_prompt_index, relation_prompt_mask, threshold, deterministic, flat, keep_prompts,
        )

    def _score_tokens(self, tokens, words_mask, token_texts, text_lengths, span_mask, entity_prompt_index,
                      entity_prompt_mask, relation_prompt_index, relation_prompt_mask, threshold,
                      deterministic, flat=None, keep_prompts=False) -> SpanScores:
        """The first stage after the encoder, per text: words, prompts, spans, entity logits.
        Prompt indices are flat positions in the (rows * T) token grid."""
        num_texts, num_words = span_mask.shape[:2]
        entity_prompts = self.prompt_rep(gather_prompts(tokens, entity_prompt_index, entity_prompt_mask), deterministic)
        relation_prompts = gather_prompts(tokens, relation_prompt_index, relation_prompt_mask)  # unprojected

        if self.exportable:  # one text per row: `score_spans` (`score_packed_spans` refuses it)
            words = pool_row_words(tokens, words_mask, num_words, self.config.subtoken_pooling)
        else:
            slots = word_slots(words_mask, token_texts, num_texts, num_words)
            words = pool_words(tokens, slots, num_texts, num_words, self.config.subtoken_pooling)
        if self.config.num_rnn_layers > 0:
            words = self.rnn(words, text_lengths)

        folded, offset = self.span_rep.out_project.fold_output(entity_prompts)  # (B, 4D, C), (B, C)
        if flat is None:
            span_hidden = self.span_rep.hidden(words, span_mask, deterministic)  # (B, W, K, 4D)
            entity_logits = jnp.einsum("bwkh,bhc->bwkc", span_hidden, folded) + offset[:, None, None, :]
            word_start = None
        else:
            span_hidden, entity_logits = self._flat_span_scores(words, span_mask, folded, offset, *flat, deterministic)
            word_start = jnp.cumsum(text_lengths) - text_lengths  # the word list's text order
        count = passing_spans(entity_logits, span_mask, entity_prompt_mask.astype(bool), threshold).sum((1, 2))
        return SpanScores(entity_logits, count, span_hidden, relation_prompts, words, word_start,
                          entity_prompts if keep_prompts else None)

    def _flat_span_scores(self, words, span_mask, folded, offset, word_texts, word_positions, deterministic):
        """Span hidden activations (F, K, 4D) over the texts' words laid end to end, and entity
        logits put back in the per-text grid (N, W, K, C).

        Packed training steps hold N text slots padded to the longest text's W words, most of them
        empty: the span stage (K spans of 4D values per word, each with a dropout draw) is the
        largest per-word cost after the encoder, so it runs on the F real words instead of N * W.
        A span that is valid in its text ends within it, so it reads the same words here. Invalid
        spans (masked everywhere) take the word list's first span values, not their text's.
        """
        num_texts, num_words, _ = span_mask.shape
        real = word_texts < num_texts
        text, position = jnp.where(real, word_texts, 0), jnp.where(real, word_positions, 0)
        flat_words = words[text, position] * real[:, None].astype(words.dtype)  # (F, D)
        flat_mask = span_mask[text, position] & real[:, None]  # (F, K)
        hidden = self.span_rep.hidden(flat_words[None], flat_mask[None], deterministic)[0]  # (F, K, 4D)
        logits = jnp.einsum("fkh,fhc->fkc", hidden, folded[text]) + offset[text][:, None, :]
        grid = jnp.zeros((*span_mask.shape, logits.shape[-1]), logits.dtype)
        grid = grid.at[jnp.where(real, word_texts, num_texts), position].set(logits, mode="drop")
        return hidden, grid

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
                scores.entity_logits, span_mask, entity_prompt_mask.astype(bool), threshold, max_entities,
                scatter=not self.exportable,
            )
        else:
            if entity_mask is None:
                raise ValueError("entity_index needs entity_mask")
            index, entity_mask = entity_index.astype(jnp.int32), entity_mask.astype(bool)
            count = entity_mask.sum(-1)
        selected = span_hidden_at(scores, index)  # (B, E, 4D)
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
            rel_logits = relation_logits(self.pair_rep, entities, scores.relation_prompts, deterministic,
                                         chunked=not self.exportable)
        else:
            rel_logits = self.triples(entities, scores.relation_prompts, entities, deterministic)
        return RelexOutput(scores.entity_logits, index, entity_mask, count, entities, pair_mask, rel_logits, adjacency)

    def vectors(
        self,
        scores: SpanScores,
        span_index,  # (B, S) flat span index l*K+k of each decoded entity (padding: 0)
        class_index,  # (B, S) its entity label slot
        pair_index,  # (B, P, 2) head and tail of each decoded relation, as positions in S
        relation_index,  # (B, P) its relation label slot
        spans: bool = True,
        labels: bool = False,
    ) -> Vectors:
        """gliner's vector outputs for decoded entities and relations, from the tensors the
        scores use (its `_attach_entity_vectors` / `_attach_relation_vectors`).

        `spans` (gliner's `return_vectors`): each entity's span representation (what the span
        MLP gives and the entity scores read), and each relation's pair representation, the
        pair MLP on [head; tail] as the relation scores read it; a triples scorer has no pair
        representation, so then the head's and the tail's span representations. `labels`
        (`return_label_vectors`): the projected entity prompts (needs `score_spans(...,
        keep_prompts=True)`) and the unprojected relation prompts, as the scores use them.
        """
        out = {}
        if spans:
            entity = self.span_rep.out_project.output(span_hidden_at(scores, span_index))  # (B, S, D)
            heads, tails = (jnp.take_along_axis(entity, pair_index[..., i, None], axis=1) for i in (0, 1))
            if self.config.triples_layer is None:
                out["relation"] = self.pair_rep(jnp.concatenate([heads, tails], axis=-1))
            else:
                out.update(relation_head=heads, relation_tail=tails)
            out["entity"] = entity
        if labels:
            out["entity_label"] = jnp.take_along_axis(scores.entity_prompts, class_index[..., None], axis=1)
            out["relation_label"] = jnp.take_along_axis(scores.relation_prompts, relation_index[..., None], axis=1)
        return Vectors(**out)

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
        return self._relate_gold(scores, span_mask, entity_prompt_mask, entity_index, entity_mask, gold_pair_mask,
                                 deterministic)

    def packed_train_outputs(
        self,
        input_ids,
        segment_ids,
        position_ids,
        words_mask,
        token_texts,
        text_lengths,
        span_mask,
        entity_prompt_index,
        entity_prompt_mask,
        relation_prompt_index,
        relation_prompt_mask,
        word_texts,
        word_positions,
        entity_index,
        entity_mask,
        gold_pair_mask,
        deterministic: bool = True,
    ) -> RelexOutput:
        """`train_outputs` on packed rows with a word list (inputs as `score_packed_spans`);
        per-text outputs."""
        scores = self.score_packed_spans(
            input_ids, segment_ids, position_ids, words_mask, token_texts, text_lengths, span_mask,
            entity_prompt_index, entity_prompt_mask, relation_prompt_index, relation_prompt_mask, jnp.float32(0.5),
            deterministic, word_texts, word_positions,
        )
        return self._relate_gold(scores, span_mask, entity_prompt_mask, entity_index, entity_mask, gold_pair_mask,
                                 deterministic)

    def _relate_gold(self, scores, span_mask, entity_prompt_mask, entity_index, entity_mask, gold_pair_mask,
                     deterministic) -> RelexOutput:
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
