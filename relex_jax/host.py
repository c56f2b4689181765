"""The host-side half of `RelexModel.inference`, in numpy and without JAX: texts cut into
pieces (whole texts, windows of long ones), the checks a text must pass before any batch runs,
`input_spans` in words, the relation stage's static sizes, and the result types.

A runtime that runs an exported model (no JAX) shares these with `RelexModel`, and with it
`Extractor`, gliner's inference API over a forward pass the model class provides.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from relex_jax.data.labels import LabelSet, normalize_labels
from relex_jax.data.packing import first_fit, pack_batch
from relex_jax.data.processor import (
    INFERENCE_BUCKETS,
    PACKED_ROW_BUCKETS,
    _bucket,
    build_batch,
    encode_prompted,
    split_words,
    window_starts,
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
from relex_jax.settings import InferenceSettings

logger = logging.getLogger("relex_jax")

MIN_ENTITY_CAP = 8  # smallest entity cap E of the relation stage (fewer distinct caps, fewer compiles)


class Piece(NamedTuple):
    """The words of one text (or one window of it) that go through the model as one row."""

    text: int  # index into the caller's texts
    offset: int  # word position of words[0] in the text
    words: list[str]


class WordEntity(NamedTuple):
    """An entity found by `RelexModel.inference_words`, in the text's word positions."""

    start: int  # first word (inclusive)
    end: int  # last word (inclusive)
    label: str
    score: float
    class_probs: dict[str, float] | None = None  # with `return_class_probs`
    vectors: dict[str, np.ndarray] | None = None  # with `return_vectors` / `return_label_vectors` (gliner's keys)


class WordRelation(NamedTuple):
    """A relation found by `RelexModel.inference_words`; head / tail index the text's entities."""

    head: int
    tail: int
    label: str
    score: float
    vectors: dict[str, np.ndarray] | None = None  # with `return_vectors` / `return_label_vectors` (gliner's keys)


def scorable_spans(word_spans: list[list[tuple[int, int]] | None], max_width: int) -> list[list[tuple[int, int]] | None]:
    """Leave out, with a warning, `input_spans` wider than the model's `max_width` words:
    the model has no score for them."""
    k = max_width
    wide = [(i, span) for i, spans in enumerate(word_spans) for span in spans or () if span[1] - span[0] >= k]
    if wide:
        logger.warning("%d input span(s) wider than max_width=%d words cannot be scored and are left out, the "
                       "first in text %d: words %d-%d", len(wide), k, wide[0][0], *wide[0][1])
    return [None if spans is None else [span for span in spans if span[1] - span[0] < k] for spans in word_spans]


def check_words_tokenize(tokenizer, words: list[list[str]]) -> None:
    """Refuse a word the tokenizer maps to no tokens (it would shift every later word)."""
    if tokenizer is None:
        return  # `RelexModel.check_settings` says why nothing can be tokenized
    distinct = list(dict.fromkeys(w for text_words in words for w in text_words))
    encodings = tokenizer.encode_batch([[w] for w in distinct], is_pretokenized=True, add_special_tokens=False)
    empty = {w for w, e in zip(distinct, encodings) if not e.ids}
    if empty:
        i, j = next((i, j) for i, text_words in enumerate(words) for j, w in enumerate(text_words) if w in empty)
        raise TextError(
            i, f"text {i}: word {j} ({words[i][j]!r}) has no tokens in this tokenizer, which would shift every "
            f"later word; drop or replace it ({len(empty)} such distinct words in all)"
        )


def split_pieces(words: list[list[str]], settings: InferenceSettings, config) -> list[Piece]:
    """Split texts into model rows: whole texts, windows of long ones, or truncated ones."""
    size, stride = settings.windows(config)
    pieces = []
    for i, text_words in enumerate(words):
        if not text_words:
            continue
        if len(text_words) <= size:
            pieces.append(Piece(i, 0, text_words))
        elif settings.long_texts == "truncate":
            logger.warning("text %d has %d words; truncated to its first %d (long_texts='truncate')",
                           i, len(text_words), size)
            pieces.append(Piece(i, 0, text_words[:size]))
        else:
            pieces.extend(Piece(i, s, text_words[s : s + size]) for s in window_starts(len(text_words), size, stride))
    return pieces


def check_positions(tokenizer, config, pieces: list[Piece], entity_sets: list[LabelSet],
                    relation_sets: list[LabelSet]) -> None:
    """Absolute position embeddings have a fixed table; a longer row would index past it
    (jit clamps such indices silently). Every piece is checked before the first batch, and
    the first too long is refused, naming its text."""
    enc, cfg = config.encoder, config
    if not enc.position_biased_input or not pieces:
        return
    encodings, _ = encode_prompted(
        tokenizer, [p.words for p in pieces], [entity_sets[p.text].prompts for p in pieces],
        [relation_sets[p.text].prompts for p in pieces], ent_token=cfg.ent_token, sep_token=cfg.sep_token,
        rel_token=cfg.rel_token,
    )
    for piece, encoding in zip(pieces, encodings):
        if len(encoding.ids) > enc.max_position_embeddings:
            raise TextError(
                piece.text,
                f"text {piece.text} (words {piece.offset}-{piece.offset + len(piece.words) - 1}) needs "
                f"{len(encoding.ids)} tokens with its prompt, but this encoder's "
                f"absolute positions stop at {enc.max_position_embeddings}; use a smaller window_size "
                "or fewer labels",
            )


def slots(count: int) -> int:
    """A static size that holds `count`: the next power of two, at least `MIN_ENTITY_CAP`."""
    return max(MIN_ENTITY_CAP, 1 << max(count - 1, 0).bit_length())


def packing_option(packing: bool | int, packing_config) -> bool | int:
    """`inference`'s packing from relex-jax's `packing` or gliner's `packing_config` (its
    `max_length` is our row length), not both."""
    if packing_config is None:
        return packing
    if packing is not False:
        raise ValueError("give packing or packing_config (gliner's), not both")
    max_length = getattr(packing_config, "max_length", None)
    if type(max_length) is not int or max_length < 1:
        raise ValueError(f"packing_config needs a positive integer max_length, got {packing_config!r}")
    return max_length


class TextError(ValueError):
    """A text the model cannot take (`text`: its index in the call), raised before any batch runs."""

    def __init__(self, text: int, message: str):
        super().__init__(message)
        self.text = text


def char_spans_to_words(input_spans, splits) -> list[list[tuple[int, int]] | None]:
    """`inference`'s `input_spans` (character offsets per text) -> (start, end) word spans (end
    inclusive). A span whose ends are not word boundaries is left out with a warning."""
    if isinstance(input_spans, (str, Mapping)) or len(input_spans) != len(splits):
        raise ValueError(f"input_spans must hold one entry per text ({len(splits)}): None or a list of "
                         "{'start': char, 'end': char} dicts")
    out, unaligned = [], []
    for i, (spans, (_, starts, ends)) in enumerate(zip(input_spans, splits)):
        if spans is None:
            out.append(None)
            continue
        word_of_start = {c: w for w, c in enumerate(starts)}
        word_of_end = {c: w for w, c in enumerate(ends)}
        words = []
        for span in spans:
            if not isinstance(span, Mapping) or not {"start", "end"} <= span.keys():
                raise ValueError(f"input_spans[{i}]: expected {{'start': char, 'end': char}} dicts, got {span!r}")
            start, end = word_of_start.get(span["start"]), word_of_end.get(span["end"])
            if start is None or end is None or end < start:
                unaligned.append((i, span))
            else:
                words.append((start, end))
        out.append(words)
    if unaligned:
        logger.warning("%d input span(s) do not start and end on word boundaries and are left out, the first in "
                       "text %d: %r", len(unaligned), unaligned[0][0], dict(unaligned[0][1]))
    return out


def check_word_spans(input_spans, words: list[list[str]]) -> list[list[tuple[int, int]] | None]:
    """`inference_words`'s `input_spans`: per text None or (start, end) word pairs inside the text."""
    if isinstance(input_spans, (str, Mapping)) or len(input_spans) != len(words):
        raise ValueError(f"input_spans must hold one entry per text ({len(words)}): None or (start, end) word pairs")
    out = []
    for i, (spans, text_words) in enumerate(zip(input_spans, words)):
        if spans is None:
            out.append(None)
            continue
        pairs = []
        for span in spans:
            if not (len(span) == 2 and all(type(x) is int for x in span) and 0 <= span[0] <= span[1] < len(text_words)):
                raise ValueError(f"input_spans[{i}]: {span!r} is not a (start, end) pair of word positions inside "
                                 f"the text's {len(text_words)} words (end inclusive)")
            pairs.append((span[0], span[1]))
        out.append(pairs)
    return out


def piece_spans(spans: list[tuple[int, int]] | None, piece: Piece) -> list[tuple[int, int]] | None:
    """A text's allowed spans that lie whole in one piece (window), in the piece's positions."""
    if spans is None:
        return None
    last = piece.offset + len(piece.words) - 1
    return [(s - piece.offset, e - piece.offset) for s, e in spans if piece.offset <= s and e <= last]


def given_entities(spans: list[list[tuple[int, int]] | None], rows: int, max_width: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The relation stage's entities for `relate_input_spans`: per text slot, the flat index
    start * K + width of each given span (sorted, as the threshold selection orders them) and
    its mask, under a cap of a few static sizes (`slots`)."""
    flat = [sorted({s * max_width + e - s for s, e in row or ()}) for row in spans]
    index = np.zeros((rows, slots(max(map(len, flat), default=0))), np.int32)
    mask = np.zeros(index.shape, bool)
    for b, row in enumerate(flat):
        index[b, :len(row)], mask[b, :len(row)] = row, True
    return index, mask


def bucket_rows(rows: int, devices: int) -> int:
    """Rows per forward: the next power of two (few shapes), a multiple of the device count."""
    padded = 1 << (rows - 1).bit_length()
    return -(-padded // devices) * devices


def load_tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    file = Path(model_dir) / "tokenizer.json"
    if not file.is_file():
        return None
    tokenizer = Tokenizer.from_file(str(file))
    # Padding and truncation saved in tokenizer.json are transformers' per-call settings; gliner
    # overrides them on every call (pad per batch, no practical truncation), and so do we.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class Extractor:
    """gliner's inference API (`inference`, `inference_words`, `predict_entities`,
    `predict_relations`, `batch_predict_entities`, `evaluate`) on the host, over a forward pass a
    subclass provides: `RelexModel` (jitted JAX) and `relex_jax.runtime.OnnxRelexModel`
    (onnxruntime) share it. A subclass has `config`, `tokenizer`, `model_dir` and defines:

      _forward(inputs, threshold, adjacency_threshold=, packed=, keep_prompts=, given=)
          -> (span scores, RelexOutput-like outputs with numpy-convertible fields)
      _attach_vectors(scores, spans, relations, settings)   (vector outputs)
      _row_multiple    rows per forward must be a multiple of it (devices)
    """

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
        rows = bucket_rows(len(pieces), self._row_multiple)
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
            grid_rows = -(-_bucket(grid_rows, PACKED_ROW_BUCKETS) // self._row_multiple) * self._row_multiple
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
