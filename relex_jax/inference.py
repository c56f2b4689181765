"""`RelexModel`: a loaded model (config, Flax module, variables, tokenizer), its jitted forward,
and gliner's inference API on top of it (`inference`, `predict_entities`, `predict_relations`),
plus `inference_words` for texts already split into words (results in word positions).

Texts go through the host-side processor (`relex_jax.data`), the jitted forward (sharded over
the local devices, data parallel) and the host-side decoder (`relex_jax.decoding`). Batches are
padded to shape buckets so a corpus compiles a handful of shapes, not one per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from relex_jax.checkpoint.convert import RELEX_CONFIG, load_relex_dir
from relex_jax.checkpoint.gliner import GLINER_CONFIG, load_gliner_checkpoint
from relex_jax.config import RelexConfig
from relex_jax.data.labels import LabelSet, normalize_labels
from relex_jax.data.packing import first_fit, pack_batch
from relex_jax.data.processor import (
    INFERENCE_BUCKETS,
    PACKED_ROW_BUCKETS,
    _bucket,
    build_batch,
    split_words,
)
from relex_jax.decoding import (
    EntitySpan,
    Relation,
    decode_entities,
    decode_relations,
    entities_to_dicts,
    merge_windows,
    relations_to_dicts,
)
from relex_jax.modeling.relex import RelexModule, RelexOutput, SpanScores
from relex_jax.host import (  # noqa: F401 (TextError, WordEntity, WordRelation: re-exported)
    Piece,
    TextError,
    WordEntity,
    WordRelation,
    bucket_rows,
    char_spans_to_words,
    check_positions,
    check_word_spans,
    check_words_tokenize,
    given_entities,
    load_tokenizer,
    packing_option,
    piece_spans,
    scorable_spans,
    slots,
    split_pieces,
)
from relex_jax.settings import InferenceSettings

logger = logging.getLogger("relex_jax")



@dataclasses.dataclass
class RelexModel:
    config: RelexConfig
    module: RelexModule
    variables: Any  # {"params": ...} (+ "batch_stats" for the TuckER scorer)
    tokenizer: Any  # tokenizers.Tokenizer, or None when the directory has no tokenizer.json
    model_dir: Path
    devices: Sequence[Any] | None = None  # batches are split over these (data parallel); None: all local
    compiled_shapes: set = dataclasses.field(default_factory=set)  # (input shapes, entity cap) pairs seen
    # (vector outputs compile a span stage that keeps the prompts, and the `vectors` stage, on top)

    def __post_init__(self):
        self.devices = tuple(self.devices or jax.local_devices())
        self._replicated = NamedSharding(self._mesh, PartitionSpec())
        self._rows = NamedSharding(self._mesh, PartitionSpec("data"))
        self.variables = jax.device_put(self.variables, self._replicated)

    def set_variables(self, variables) -> None:
        """Swap in new weights of the same shapes (e.g. a training run's dev evaluation): the
        jitted stages, and what they compiled, are kept."""
        self.variables = jax.device_put(variables, self._replicated)

    @functools.cached_property
    def _mesh(self) -> Mesh:
        return Mesh(np.asarray(self.devices), ("data",))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, dtype=None, devices=None) -> "RelexModel":
        """Load a relex-jax model directory, or a gliner checkpoint (directory or hub id, converted
        in memory). `dtype` sets the compute dtype (parameters stay float32); `devices` the
        devices batches are split over (default: all local devices)."""
        path = Path(path_or_hub_id).expanduser()
        if (path / RELEX_CONFIG).is_file():
            config, variables = load_relex_dir(path)
            model_dir = path
        elif (path / GLINER_CONFIG).is_file() or not path.exists():
            config, variables, model_dir = load_gliner_checkpoint(path_or_hub_id)
        else:
            raise FileNotFoundError(f"{path} holds neither {RELEX_CONFIG} (relex-jax) nor {GLINER_CONFIG} (gliner)")
        module = RelexModule(config) if dtype is None else RelexModule(config, dtype=dtype)
        return cls(config, module, variables, load_tokenizer(model_dir), Path(model_dir), devices=devices)

    @functools.cached_property
    def _stages(self):
        """The jitted stages: span scoring (one text per row, or packed rows; `keep_prompts` for
        label vectors compiles its own variant), relations under a static entity cap, and the
        vector outputs of decoded results (compiled only when asked)."""
        def stage(method, *static):
            return jax.jit(functools.partial(self.module.apply, method=method), static_argnames=static)

        return (stage(RelexModule.score_spans, "keep_prompts"), stage(RelexModule.score_packed_spans, "keep_prompts"),
                stage(RelexModule.relate, "max_entities"), stage(RelexModule.vectors, "spans", "labels"))

    def forward(
        self, inputs: tuple, threshold: float, max_entities: int | None = None, adjacency_threshold: float | None = None,
        packed: bool = False,
    ) -> RelexOutput:
        """Run the model on prepared inputs (the positional arguments of `RelexModule`, or with
        `packed` of `RelexModule.score_packed_spans` (`PackedBatch.model_inputs()`), without the
        thresholds), rows and texts split over `devices`, whose count must divide both.

        The entity cap E is sized per batch from the span stage's counts (the next power of
        two, at least `MIN_ENTITY_CAP`), so nothing is cut and texts with few entities do not
        pay for a large pair grid; a pinned `max_entities` too small for the batch raises."""
        return self._forward(inputs, threshold, max_entities, adjacency_threshold, packed)[1]

    def _forward(self, inputs: tuple, threshold: float, max_entities: int | None = None,
                 adjacency_threshold: float | None = None, packed: bool = False, keep_prompts: bool = False,
                 given: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[SpanScores, RelexOutput]:
        """`forward`, also returning the span stage's outputs (on the devices), with the projected
        entity prompts when `keep_prompts`; `given` (flat span index, mask), both (texts, E), are
        the relation stage's entities instead of the spans passing the threshold."""
        span_at = 6 if packed else 4  # position of span_mask; the entity prompt mask follows its index
        for what, count in (("rows", len(inputs[0])), ("texts", len(inputs[span_at]))):
            if count % len(self.devices):
                raise ValueError(f"a batch of {count} {what} cannot be split evenly over {len(self.devices)} devices")
        inputs = jax.device_put(tuple(inputs), self._rows)
        score, score_packed, relate, _ = self._stages
        start = time.perf_counter()
        scores = (score_packed if packed else score)(self.variables, *inputs, np.float32(threshold),
                                                     keep_prompts=keep_prompts)
        if given is not None:
            index, mask = jax.device_put(given, self._rows)
            out = relate(self.variables, scores, inputs[span_at], inputs[span_at + 2], np.float32(threshold),
                         None if adjacency_threshold is None else np.float32(adjacency_threshold),
                         max_entities=given[0].shape[1], entity_index=index, entity_mask=mask)
            return scores, out
        needed = int(np.asarray(scores.entity_count).max(initial=0))
        if max_entities is not None and needed > max_entities:
            raise ValueError(
                f"{needed} spans passed threshold {threshold} in one text, more than max_entities={max_entities}; "
                "raise max_entities or the threshold, or pass max_entities=None to size it automatically"
            )
        cap = max_entities or slots(needed)
        edge = None if adjacency_threshold is None else np.float32(adjacency_threshold)
        span_mask, entity_prompt_mask = inputs[span_at], inputs[span_at + 2]
        out = relate(self.variables, scores, span_mask, entity_prompt_mask, np.float32(threshold), edge, max_entities=cap)
        signature = (tuple(x.shape for x in inputs), cap)
        if signature not in self.compiled_shapes:
            self.compiled_shapes.add(signature)
            logger.debug("new forward shapes %s (compile + run %.2f s; %d so far)", signature,
                         time.perf_counter() - start, len(self.compiled_shapes))
        return scores, out

    def inference(
        self,
        texts: str | Sequence[str],
        labels,
        relations=[],  # noqa: B006 (gliner's default; never mutated)
        flat_ner: bool = True,
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        multi_label: bool = False,
        batch_size: int = 8,
        packing_config=None,
        input_spans: Sequence[Sequence[Mapping[str, int]] | None] | None = None,
        return_relations: bool = True,
        return_class_probs: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        long_texts: str = "window",
        window_size: int | None = None,
        window_stride: int | None = None,
        packing: bool | int = False,
        relate_input_spans: bool = False,
    ):
        """Extract entities (and relations) from texts, as gliner's `inference`.

        gliner 0.2.29's parameters come first, in its order and with its defaults, so a call
        written for gliner runs unchanged; relex-jax's own options are keyword-only after them.

        Args:
            texts: a string or a sequence of strings. Empty or whitespace-only texts give [].
            labels: entity types: a string, a list, a {name: description} mapping (the model reads
                the descriptions, results carry the names), or one list / mapping per text.
            relations: relation types in the same forms; None or [] for entities only.
            threshold: entity threshold (strict); it also picks the spans relations are scored
                between. `adjacency_threshold` and `relation_threshold` default to it.
            flat_ner, multi_label: gliner's overlap rules for the greedy span decoding.
            batch_size: texts (or windows) per forward; texts are grouped by length first, so
                results come back in input order but batches do not follow it.
            return_relations: False returns only the entity lists.
            long_texts: texts with more than `window_size` words (default: the config's
                `max_len`, gliner's truncation length) are read as overlapping windows,
                `window_stride` words apart (default: three quarters of a window), and merged
                (see `merge_windows`); "truncate" cuts them to their first `window_size` words as
                gliner does, with a warning naming the text.
            packing: True (rows of `PACKED_ROW_TOKENS` tokens) or a row length: the texts of a
                batch share rows of the encoder's input instead of one padded row each (see
                `relex_jax.data.packing`); same results (scores within float rounding), less
                padding. Rows grow to hold the batch's longest text.
            packing_config: gliner's `InferencePackingConfig` (or any object with `max_length`):
                the same as `packing=max_length` (its `streams_per_batch` has no counterpart:
                rows per batch follow from the batch).
            return_vectors: each entity dict gets "vector", its span representation (the one its
                scores read), and each relation dict "vector", the pair representation its scores
                read (with a triples scorer, which has none: "head_relation_vector" and
                "tail_relation_vector", the head's and the tail's span representations), as gliner.
            return_label_vectors: each entity dict gets "label_vector", the (projected) prompt
                vector of its label, and each relation dict "label_vector", its relation's prompt
                vector, as the scores use them (gliner's). Vectors are float32 numpy arrays of the
                model's hidden size. Without them nothing is compiled or copied for vectors;
                with them a gather step (and, for label vectors, a span stage that keeps the
                entity prompts) compiles once per shape. A merged window result carries the
                vectors of its window.
            input_spans: gliner's span filter: one entry per text, None (every span) or a list of
                {"start": char, "end": char} dicts (end exclusive, as the entity dicts); only
                these spans can be entities, still under `threshold`. Relations are scored as
                without the filter and kept between the spans it lets through, as in gliner. A
                span that does not start and end on word boundaries, or is wider than the
                model's `max_width` words, cannot be scored: it is left out with a warning
                (gliner leaves it out silently).
            return_class_probs: each entity dict gets "class_probs", {label: probability} of its
                span's 5 most probable labels, best first (gliner's option).
            relate_input_spans: (relex-jax) relations are scored between exactly the
                `input_spans`, whatever their entity scores, as training scores them between the
                gold entities: the given-entities setting (relation classification). Without it
                (gliner's behaviour) relations are scored between every span passing `threshold`
                and only then filtered, so a given span under the threshold has no relations and
                a threshold of 0 pairs every span of the text. Entities are still decoded under
                `threshold` (0 returns every given span); a relation needs both its spans decoded.

        Returns:
            (entities, relations): one list of gliner-format dicts per text, or only entities.

        Raises:
            ValueError for bad settings or labels, before any text is run; `TextError` (a
            ValueError naming the text) for a text the model cannot take.
        """
        settings = InferenceSettings(
            threshold=threshold, adjacency_threshold=adjacency_threshold, relation_threshold=relation_threshold,
            flat_ner=flat_ner, multi_label=multi_label, batch_size=batch_size, long_texts=long_texts,
            window_size=window_size, window_stride=window_stride, packing=packing_option(packing, packing_config),
            return_class_probs=return_class_probs, return_vectors=return_vectors,
            return_label_vectors=return_label_vectors, relate_input_spans=relate_input_spans,
        )
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        splits = [split_words(text) for text in texts]
        word_spans = None if input_spans is None else char_spans_to_words(input_spans, splits)
        results = self._extract([words for words, _, _ in splits], labels, relations, settings, return_relations,
                                word_spans)
        all_entities, all_relations = [], []
        for text, (_, starts, ends), (spans, rels) in zip(texts, splits, results):
            entities = entities_to_dicts(spans, text, starts, ends)
            all_entities.append(entities)
            all_relations.append(relations_to_dicts(rels, entities))
        return (all_entities, all_relations) if return_relations else all_entities

    def inference_words(
        self,
        words: Sequence[Sequence[str]],
        labels,
        relations=[],  # noqa: B006 (as `inference`; never mutated)
        flat_ner: bool = True,
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        long_texts: str = "window",
        window_size: int | None = None,
        window_stride: int | None = None,
        packing: bool | int = False,
        input_spans: Sequence[Sequence[tuple[int, int]] | None] | None = None,
        return_class_probs: bool = False,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        relate_input_spans: bool = False,
    ) -> tuple[list[list[WordEntity]], list[list[WordRelation]]]:
        """`inference` on texts already split into words (a dataset's own tokens), in word positions.

        The words go to the model as given: nothing is re-split (the regex splitter of
        `inference` would cut e.g. "U.S." into three words). Each word must be a non-blank
        string that the tokenizer turns into at least one token (a word without tokens would
        shift the positions of every later word, as in gliner, so it is refused).

        Args:
            words: one sequence of words (list or tuple of strings) per text; a text with no
                words gives no entities. A single text is `[words]`, not `words`.
            labels, relations, threshold, adjacency_threshold, relation_threshold, flat_ner,
            multi_label, batch_size, long_texts, window_size, window_stride, packing,
            return_class_probs, return_vectors, return_label_vectors, relate_input_spans: as
                `inference` (windows and
                truncation count these words; vectors come in the results' `vectors` dicts).
            input_spans: as `inference`'s, in words: per text None or (start, end) word pairs,
                end inclusive; a pair outside the text is an error.

        Returns:
            (entities, relations), one list per text:
            entities: `WordEntity(start, end, label, score, class_probs, vectors)`, `start` / `end`
                the first and last word (inclusive), sorted by start as `inference`'s dicts;
            relations: `WordRelation(head, tail, label, score, vectors)`, `head` / `tail` indexing that
                text's entity list, in `inference`'s order. Scores and order equal `inference`'s
                on the same words.
        """
        settings = InferenceSettings(
            threshold=threshold, adjacency_threshold=adjacency_threshold, relation_threshold=relation_threshold,
            flat_ner=flat_ner, multi_label=multi_label, batch_size=batch_size, long_texts=long_texts,
            window_size=window_size, window_stride=window_stride, packing=packing,
            return_class_probs=return_class_probs, return_vectors=return_vectors,
            return_label_vectors=return_label_vectors, relate_input_spans=relate_input_spans,
        )
        if isinstance(words, (str, bytes)):
            raise TypeError("words must hold one list of words per text, got a string")
        texts = []
        for i, text_words in enumerate(words):
            if not isinstance(text_words, (list, tuple)):
                raise TypeError(f"text {i} is a {type(text_words).__name__}, not a list or tuple of words "
                                "(one text is passed as [words])")
            for j, word in enumerate(text_words):
                if not isinstance(word, str):
                    raise TypeError(f"text {i}: word {j} is a {type(word).__name__} ({word!r}), not a string")
                if not word.strip():
                    raise ValueError(f"text {i}: word {j} ({word!r}) is empty or whitespace; every word needs a token")
            texts.append(list(text_words))
        word_spans = None if input_spans is None else check_word_spans(input_spans, texts)
        check_words_tokenize(self.tokenizer, texts)
        results = self._extract(texts, labels, relations, settings, True, word_spans)
        entities = [[WordEntity(s.start, s.end, s.label, s.score, s.class_probs, s.vectors) for s in spans]
                    for spans, _ in results]
        rels = [[WordRelation(r.head, r.tail, r.label, r.score, r.vectors) for r in text_rels] for _, text_rels in results]
        return entities, rels

    def predict_entities(
        self,
        text: str,
        labels,
        relations=[],  # noqa: B006 (gliner's default; never mutated)
        flat_ner: bool = True,
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        multi_label: bool = False,
        return_class_probs: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        **kwargs,
    ):
        """Entities of one text, as gliner's `predict_entities` (same parameters; `kwargs` go to
        `inference`, e.g. `relation_threshold` or relex-jax's own options). Relation types, when
        given, are part of the prompt and so change entity scores, as in gliner."""
        return self.inference(
            [text], labels, relations=relations, flat_ner=flat_ner, threshold=threshold,
            adjacency_threshold=adjacency_threshold, multi_label=multi_label, return_relations=False,
            return_class_probs=return_class_probs, return_vectors=return_vectors,
            return_label_vectors=return_label_vectors, **kwargs,
        )[0]

    def predict_relations(
        self,
        text: str,
        labels,
        relations,
        flat_ner: bool = True,
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        multi_label: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        **kwargs,
    ):
        """(entities, relations) of one text, as gliner's `predict_relations`."""
        entities, rels = self.inference(
            [text], labels, relations=relations, flat_ner=flat_ner, threshold=threshold,
            adjacency_threshold=adjacency_threshold, relation_threshold=relation_threshold, multi_label=multi_label,
            return_relations=True, return_vectors=return_vectors, return_label_vectors=return_label_vectors,
            **kwargs,
        )
        return entities[0], rels[0]

    def batch_predict_entities(
        self,
        texts: Sequence[str],
        labels,
        flat_ner: bool = True,
        threshold: float = 0.5,
        multi_label: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        **kwargs,
    ):
        """gliner's deprecated `batch_predict_entities`: `inference` with these arguments, and so,
        as in gliner 0.2.29 for relex models, (entities, relations) unless `kwargs` hold
        `return_relations=False`."""
        return self.inference(
            texts, labels, flat_ner=flat_ner, threshold=threshold, multi_label=multi_label,
            return_vectors=return_vectors, return_label_vectors=return_label_vectors, **kwargs,
        )

    def check_settings(self, settings: InferenceSettings) -> None:
        """Refuse settings this model cannot run (see `InferenceSettings.check_model`) and a
        model that cannot tokenize, before any text is read."""
        if self.tokenizer is None:
            raise ValueError(f"{self.model_dir} has no tokenizer.json, so texts cannot be tokenized")
        settings.check_model(self.config)

    def _extract(self, words: list[list[str]], labels, relations, settings: InferenceSettings,
                 return_relations: bool, word_spans: list[list[tuple[int, int]] | None] | None = None,
                 ) -> list[tuple[list[EntitySpan], list[Relation]]]:
        """The shared path of `inference` and `inference_words`: validate labels and settings,
        cut texts into pieces, check every piece fits the model, batch them by length, forward,
        decode, merge windows. Returns per text its decoded spans (text word positions) and
        relations ([] for a text with no words)."""
        entity_sets = normalize_labels(labels, len(words), "labels")
        relation_sets = normalize_labels(relations, len(words), "relations", required=False)
        self.check_settings(settings)
        for i, text_words in enumerate(words):
            if text_words and not entity_sets[i].prompts:
                raise ValueError(f"text {i} has no entity labels: name at least one type to extract")
        if word_spans is not None:
            word_spans = scorable_spans(word_spans, self.config.max_width)
        if settings.relate_input_spans and (word_spans is None or any(spans is None for spans in word_spans)):
            raise ValueError("relate_input_spans needs input_spans, a list of spans for every text: the spans to "
                             "score relations between")

        pieces = split_pieces(words, settings, self.config)
        check_positions(self.tokenizer, self.config, pieces, entity_sets, relation_sets)
        results: list[list[tuple[list[EntitySpan], list[Relation]]]] = [[] for _ in words]
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i].words))
        for chunk in range(0, len(order), settings.batch_size):
            batch = [pieces[i] for i in order[chunk : chunk + settings.batch_size]]
            decoded = self._run(batch, entity_sets, relation_sets, settings, return_relations, word_spans)
            for piece, result in zip(batch, decoded):
                results[piece.text].append(result)
        merged = []
        for i, windows in enumerate(results):
            if not windows:
                merged.append(([], []))
            elif len(windows) == 1:
                merged.append(windows[0])
            else:
                merged.append(merge_windows(windows, settings.flat_ner, settings.multi_label, relation_sets[i].names))
        return merged

    def _run(self, pieces: list[Piece], entity_sets: list[LabelSet], relation_sets: list[LabelSet],
             settings: InferenceSettings, return_relations: bool, word_spans=None):
        """Forward and decode one batch of pieces (packed into rows when `settings.packing`, or
        one padded row each); spans come back in text word positions."""
        cfg = self.config
        row_tokens = settings.row_tokens()
        rows = bucket_rows(len(pieces), len(self.devices))
        # filler rows repeat a real one (dropped below); packed, they are empty text slots instead
        padded = pieces if row_tokens else pieces + [pieces[-1]] * (rows - len(pieces))
        ents = [entity_sets[p.text] for p in padded]
        rels = [relation_sets[p.text] for p in padded]
        batch = build_batch(
            self.tokenizer, [p.words for p in padded], [e.prompts for e in ents], [r.prompts for r in rels],
            ent_token=cfg.ent_token, sep_token=cfg.sep_token, rel_token=cfg.rel_token, max_width=cfg.max_width,
            pad_id=self.config.encoder.pad_token_id, pooling=cfg.subtoken_pooling,
            embed_ent_token=cfg.embed_ent_token, embed_rel_token=cfg.embed_rel_token,
            buckets={k: v for k, v in INFERENCE_BUCKETS.items() if not (row_tokens and k == "tokens")},
        )
        if row_tokens:
            longest = int(batch.input_ids.shape[1])
            row_tokens = row_tokens if longest <= row_tokens else _bucket(longest, INFERENCE_BUCKETS["tokens"])
            grid_rows = first_fit(batch.attention_mask.sum(1), row_tokens)[2]
            grid_rows = -(-_bucket(grid_rows, PACKED_ROW_BUCKETS) // len(self.devices)) * len(self.devices)
            inputs = pack_batch(batch, row_tokens, grid_rows, texts=rows, pad_id=cfg.encoder.pad_token_id).model_inputs()
        else:
            inputs = batch.model_inputs()
        n = len(pieces)
        allowed = None if word_spans is None else [piece_spans(word_spans[p.text], p) for p in pieces]
        given = given_entities(allowed, rows, cfg.max_width) if settings.relate_input_spans else None
        scores, out = self._forward(inputs, settings.threshold, adjacency_threshold=settings.adjacency_threshold,
                                    packed=bool(row_tokens), keep_prompts=settings.return_label_vectors, given=given)
        spans = decode_entities(np.asarray(out.entity_logits)[:n], batch.text_lengths[:n], None,
                                [e.names for e in ents[:n]], settings.threshold, settings.flat_ner,
                                settings.multi_label, allowed_spans=allowed, class_probs=settings.return_class_probs)
        if return_relations:
            relations = decode_relations(
                spans, np.asarray(out.entity_index)[:n], np.asarray(out.entity_mask)[:n], np.asarray(out.pair_mask)[:n],
                np.asarray(out.relation_logits)[:n], [r.names for r in rels[:n]], settings.relation_cutoff,
                cfg.max_width,
            )
        else:
            relations = [[] for _ in range(n)]
        if settings.return_vectors or settings.return_label_vectors:
            spans, relations = self._attach_vectors(scores, spans, relations, settings)
        k = cfg.max_width
        return [
            ([s._replace(start=s.start + p.offset, end=s.end + p.offset, span_index=(s.start + p.offset) * k + s.end - s.start)
              for s in row_spans] if p.offset else row_spans, row_rels)
            for p, row_spans, row_rels in zip(pieces, spans, relations)
        ]

    def evaluate(
        self,
        test_data: Sequence[Mapping],
        flat_ner: bool = False,
        multi_label: bool = False,
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        batch_size: int = 12,
        entity_types=None,
        relation_types=None,
        **options,
    ) -> tuple[tuple[str, float], tuple[str, float]]:
        """gliner's `evaluate` on gliner-format records: ((entity P/R/F1 text, entity F1),
        (relation P/R/F1 text, relation F1)); see `relex_jax.evaluation.gliner_evaluate`.
        `options` are `inference_words`'s own keyword options (`long_texts`, `window_size`, ...)."""
        from relex_jax.evaluation import gliner_evaluate

        return gliner_evaluate(self, test_data, flat_ner, multi_label, threshold, adjacency_threshold,
                               relation_threshold, batch_size, entity_types, relation_types, **options)

    def _attach_vectors(self, scores: SpanScores, spans: list[list[EntitySpan]], relations: list[list[Relation]],
                        settings: InferenceSettings) -> tuple[list[list[EntitySpan]], list[list[Relation]]]:
        """gliner's vector outputs for one batch's decoded spans and relations (rows of the span
        stage, spans in the row's word positions): host-built indices of the decoded results,
        one gather on the devices (`RelexModule.vectors`); only the vectors of the decoded results
        (padded to a few sizes, `slots`) come back to the host."""
        rows = scores.entity_logits.shape[0]
        span_index = np.zeros((rows, slots(max(map(len, spans)))), np.int32)
        class_index = np.zeros_like(span_index)
        pair_index = np.zeros((rows, slots(max(map(len, relations))), 2), np.int32)
        relation_index = np.zeros(pair_index.shape[:2], np.int32)
        for b, row in enumerate(spans):
            for i, span in enumerate(row):
                span_index[b, i], class_index[b, i] = span.span_index, span.class_index
        for b, row in enumerate(relations):
            for i, rel in enumerate(row):
                pair_index[b, i], relation_index[b, i] = (rel.head, rel.tail), rel.class_index
        indices = jax.device_put((span_index, class_index, pair_index, relation_index), self._rows)
        out = jax.device_get(self._stages[3](self.variables, scores, *indices, spans=settings.return_vectors,
                                             labels=settings.return_label_vectors))
        vectors = {f.name: np.asarray(getattr(out, f.name), np.float32) for f in dataclasses.fields(out)
                   if getattr(out, f.name) is not None}

        def pick(keys: dict[str, str], b: int, i: int) -> dict[str, np.ndarray]:
            return {key: vectors[name][b, i] for key, name in keys.items() if name in vectors}

        entity_keys = {"vector": "entity", "label_vector": "entity_label"}
        relation_keys = {"vector": "relation", "label_vector": "relation_label",
                         "head_relation_vector": "relation_head", "tail_relation_vector": "relation_tail"}
        spans = [[s._replace(vectors=pick(entity_keys, b, i)) for i, s in enumerate(row)] for b, row in enumerate(spans)]
        relations = [[r._replace(vectors=pick(relation_keys, b, i)) for i, r in enumerate(row)]
                     for b, row in enumerate(relations)]
        return spans, relations


