"""The host-side half of `RelexModel.inference`, in numpy and without JAX: texts cut into
pieces (whole texts, windows of long ones), the checks a text must pass before any batch runs,
`input_spans` in words, the relation stage's static sizes, and the result types.

A runtime that runs an exported model (no JAX) shares these with `RelexModel`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from relex_jax.data.labels import LabelSet
from relex_jax.data.processor import encode_prompted, window_starts
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
