"""Packed rows: several texts (each its own prompt + words, exactly the token sequence gliner
builds) share one row of a fixed (rows, tokens_per_row) token grid.

Texts are placed whole, first fit in the order given: a text is never cut or dropped, and one
longer than a row is an error naming it (choose a longer row). Each text gets a segment id
(1, 2, ... within its row; 0 = padding), positions that restart at 0 and a text slot n in a
per-text grid of N slots. The encoder attends block-diagonally by segment
(`relex_jax.modeling.deberta.segment_pair_mask`), so every text's token vectors equal those of
the same text encoded alone; after the encoder, word pooling and prompt gathering read the grid
through the host-built indices here and everything else runs per text, as without packing
(`RelexModule.score_packed_spans`). With a word budget (`pack_batch(..., words=F)`, training),
the span stage also runs on the texts' words laid end to end, F of them, instead of on N text
slots padded to the longest text (see `RelexModule._flat_span_scores`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from relex_jax.data.processor import Batch


@dataclasses.dataclass
class PackedBatch:
    """Model inputs of packed rows, in `RelexModule.score_packed_spans`' positional order."""

    input_ids: np.ndarray  # (rows, T)
    segment_ids: np.ndarray  # (rows, T) 1, 2, ... per text in the row, 0 = padding
    position_ids: np.ndarray  # (rows, T) position within the text
    words_mask: np.ndarray  # (rows, T) gliner's 1-based word index within the text, 0 elsewhere
    token_texts: np.ndarray  # (rows, T) text slot of each token (0 for padding, masked by words_mask)
    text_lengths: np.ndarray  # (N,) words per text, 0 for an unused slot
    span_mask: np.ndarray  # (N, W, K)
    entity_prompt_index: np.ndarray  # (N, C) flat positions r * T + t in the grid
    entity_prompt_mask: np.ndarray  # (N, C)
    relation_prompt_index: np.ndarray  # (N, R)
    relation_prompt_mask: np.ndarray  # (N, R)
    # with a word budget F: every text's words end to end (text 0's, then text 1's, ...), as
    # (text slot, word index) pairs; unused entries have text slot N
    word_texts: np.ndarray | None = None  # (F,)
    word_positions: np.ndarray | None = None  # (F,)

    def model_inputs(self) -> tuple:
        """The positional inputs of `score_packed_spans` (the word list goes by keyword)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("word_"))


def check_packable(config) -> None:
    """Refuse a `RelexConfig` whose encoder reads across packed texts: the layer fuser averages
    over whole rows, DeBERTa-v2's conv layer reads neighbouring tokens."""
    if config.fuse_layers:
        raise ValueError("packing is not supported with fuse_layers=True: the layer fuser averages over whole rows")
    if getattr(config.encoder, "conv_kernel_size", 0) > 0:
        raise ValueError("packing is not supported with DeBERTa-v2's conv layer (conv_kernel_size > 0): its "
                         "kernel reads neighbouring tokens, which would belong to other texts")


def first_fit(lengths, tokens_per_row: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Place texts of `lengths` tokens into rows of `tokens_per_row`, first fit in order.

    Returns (row, offset) per text and the number of rows used. Raises `ValueError` for a text
    longer than a row, or when `rows` is given and the texts do not fit in that many.
    """
    lengths = np.asarray(lengths, np.int64)
    too_long = np.nonzero(lengths > tokens_per_row)[0]
    if len(too_long):
        i = int(too_long[0])
        raise ValueError(f"text {i} has {lengths[i]} tokens (with its prompt), more than a packed row of "
                         f"{tokens_per_row}; use longer rows (packing tokens_per_row)")
    free: list[int] = []
    row_of, offset = np.zeros(len(lengths), np.int32), np.zeros(len(lengths), np.int32)
    for i, n in enumerate(lengths):
        r = next((r for r, space in enumerate(free) if space >= n), len(free))
        if r == len(free):
            if rows is not None and r == rows:
                raise ValueError(f"{len(lengths)} texts ({lengths.sum()} tokens) do not fit {rows} rows of "
                                 f"{tokens_per_row} tokens")
            free.append(tokens_per_row)
        row_of[i], offset[i] = r, tokens_per_row - free[r]
        free[r] -= n
    return row_of, offset, len(free)


def pack_batch(batch: Batch, tokens_per_row: int, rows: int | None = None, texts: int | None = None,
               pad_id: int = 0, words: int | None = None) -> PackedBatch:
    """Pack a one-text-per-row `Batch` (`build_batch`) into rows of `tokens_per_row` tokens.

    `rows` fixes the grid's row count (default: as many as first fit needs), `texts` the number
    of text slots N (default: the batch's rows; extra slots are empty, masked texts), `words`
    the length F of the end-to-end word list (default: none is built); more words are an error.
    """
    lengths = batch.attention_mask.sum(1)
    row_of, offset, used = first_fit(lengths, tokens_per_row, rows)
    rows = used if rows is None else rows
    count, n_slots = len(lengths), len(lengths) if texts is None else texts
    if n_slots < count:
        raise ValueError(f"{count} texts but only {n_slots} text slots")
    shape = (rows, tokens_per_row)
    input_ids = np.full(shape, pad_id, np.int32)
    segment_ids, position_ids, words_mask, token_texts = (np.zeros(shape, np.int32) for _ in range(4))
    segment_of_row = np.zeros(rows, np.int32)
    for i, (r, start, n) in enumerate(zip(row_of, offset, lengths)):
        segment_of_row[r] += 1
        span = slice(start, start + n)
        input_ids[r, span] = batch.input_ids[i, :n]
        segment_ids[r, span] = segment_of_row[r]
        position_ids[r, span] = np.arange(n)
        words_mask[r, span] = batch.words_mask[i, :n]
        token_texts[r, span] = i
    base = (row_of.astype(np.int64) * tokens_per_row + offset)[:, None]

    def per_text(array, fill=0):
        out = np.full((n_slots, *array.shape[1:]), fill, array.dtype)
        out[:count] = array
        return out

    def flat_prompts(index, mask):
        return per_text(np.where(mask, index + base, 0).astype(np.int32)), per_text(mask)

    flat_words = (None, None) if words is None else word_list(batch.text_lengths, words, n_slots)
    return PackedBatch(
        input_ids, segment_ids, position_ids, words_mask, token_texts, per_text(batch.text_lengths),
        per_text(batch.span_mask), *flat_prompts(batch.entity_prompt_index, batch.entity_prompt_mask),
        *flat_prompts(batch.relation_prompt_index, batch.relation_prompt_mask), *flat_words,
    )


def word_list(text_lengths, words: int, none: int) -> tuple[np.ndarray, np.ndarray]:
    """(text slot, word index) of every word of the texts, end to end in text order, padded to
    `words` entries with text slot `none`."""
    text_lengths = np.asarray(text_lengths, np.int64)
    if text_lengths.sum() > words:
        raise ValueError(f"{len(text_lengths)} texts have {text_lengths.sum()} words, more than the word list's "
                         f"{words} (packing max_words)")
    texts = np.full(words, none, np.int32)
    positions = np.zeros(words, np.int32)
    texts[: text_lengths.sum()] = np.repeat(np.arange(len(text_lengths)), text_lengths)
    positions[: text_lengths.sum()] = np.concatenate([np.arange(n) for n in text_lengths] or [[]])
    return texts, positions
