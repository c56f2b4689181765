"""Host-side (numpy) input preparation: words, prompt layout, tokenization, word masks, spans.

Reproduces gliner's span-relex batch construction (spec §2): the word splitter with character
offsets, the prompt `<<ENT>> e1 ... <<SEP>> <<REL>> r1 ... <<SEP>> w1 ... wL` (both `<<SEP>>`
always present; an empty entity label contributes only its `<<ENT>>`), tokenization of the words
with the checkpoint's `tokenizers` tokenizer, and `words_mask` by gliner's word-id-transition
counter. Sizes can be padded up to caller-chosen buckets so that `jit` sees few shapes.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

WORD_PATTERN = re.compile(r"\w+(?:[-_]\w+)*|\S")


def split_words(text: str) -> tuple[list[str], list[int], list[int]]:
    """gliner's default splitter: (words, start char offsets, end char offsets, end exclusive)."""
    matches = list(WORD_PATTERN.finditer(text))
    return [m.group() for m in matches], [m.start() for m in matches], [m.end() for m in matches]


def prompt_positions(input_ids, attention_mask, token_id: int, size: int | None = None, next_token: bool = False):
    """Token positions of prompt marker `token_id` per row, left-packed: (index (B, P), mask (B, P)).

    As gliner's `extract_prompt_features`: occurrences among attended tokens, in order; with
    `next_token` the vector is read at the following token (`embed_ent_token=False`). `size`
    pads P beyond the batch maximum (a shape bucket); it may not cut occurrences.
    """
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    hits = (input_ids == token_id) & (attention_mask > 0)
    counts = hits.sum(1)
    width = int(counts.max(initial=0)) if size is None else size
    if counts.max(initial=0) > width:
        raise ValueError(f"a row has {counts.max()} prompts of token {token_id}, more than the {width} slots given")
    index = np.zeros((len(hits), width), np.int32)
    mask = np.arange(width)[None, :] < counts[:, None]
    rows, cols = np.nonzero(hits)
    slots = np.concatenate([np.arange(c) for c in counts]) if len(rows) else np.zeros(0, int)
    index[rows, slots] = cols + int(next_token)
    return index, mask


def word_mask(word_ids: list[int | None], skip: int, pooling: str) -> list[int]:
    """gliner's `words_mask` for one sequence: a 1-based text-word index on the selected sub-tokens.

    The index counts word-id transitions, not words: a word with no tokens shifts later indices,
    exactly as gliner.
    """
    mask, previous, seen = [], None, 0
    for position, wid in enumerate(word_ids):
        if wid is None:
            mask.append(0)
        else:
            first = wid != previous
            seen += first
            following = word_ids[position + 1] if position + 1 < len(word_ids) else None
            selected = pooling in ("mean", "max") or (first if pooling == "first" else following != wid)
            mask.append(seen - skip if selected and seen > skip else 0)
        previous = wid
    return mask


@dataclasses.dataclass
class Batch:
    """Model inputs (numpy) in `RelexModule`'s positional order, plus what decoding needs."""

    input_ids: np.ndarray  # (B, T)
    attention_mask: np.ndarray  # (B, T)
    words_mask: np.ndarray  # (B, T)
    text_lengths: np.ndarray  # (B,)
    span_mask: np.ndarray  # (B, W, K)
    entity_prompt_index: np.ndarray  # (B, C)
    entity_prompt_mask: np.ndarray  # (B, C)
    relation_prompt_index: np.ndarray  # (B, R)
    relation_prompt_mask: np.ndarray  # (B, R)

    def model_inputs(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


# Shape buckets: the padded sizes `build_batch` rounds up to (`_bucket`), so that `jit` sees few
# shapes. Inference: texts are grouped by length, so token and word counts move together and few
# combinations occur; midpoints keep padding low.
INFERENCE_BUCKETS = {
    "tokens": (64, 128, 192, 256, 384, 512, 768, 1024),
    "words": (16, 32, 64, 96, 128, 192, 256, 384, 512),
    "entities": (2, 4, 8, 16, 32, 64),
    "relations": (2, 4, 8, 16, 32, 64),
}
# Packed inference grid rows per forward: powers of two and their midpoints (at most 1/3 empty).
PACKED_ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Training, for the dimensions that set a step's cost: powers of two only, since batches are not
# grouped by length (measured on CoNLL04, 1,000 batches of 8: 12 distinct shapes, against 104 with
# midpoints added and label counts bucketed too). `data.buckets` overrides;
# `relex_jax.training.loop.default_buckets` adds one size each for the label counts.
TRAINING_BUCKETS = {
    "tokens": (32, 64, 128, 256, 512, 1024),
    "words": (16, 32, 64, 128, 256, 512),
    "gold_entities": (8, 16, 32, 64),
}


def _bucket(size: int, buckets: tuple[int, ...] | None) -> int:
    """The smallest bucket holding `size`; beyond the largest, the next multiple of it."""
    if not buckets:
        return size
    for b in sorted(buckets):
        if size <= b:
            return b
    top = max(buckets)
    return -(-size // top) * top


def encode_prompted(tokenizer, words, entity_labels, relation_labels, *, ent_token: str, sep_token: str,
                    rel_token: str) -> tuple[list, list[int]]:
    """Tokenize each text behind its prompt as gliner lays it out: (encodings, prompt words per text)."""
    sequences, skips = [], []
    for text_words, ents, rels in zip(words, entity_labels, relation_labels):
        prompt = [w for label in ents for w in ((ent_token, label) if label else (ent_token,))]
        prompt += [sep_token] + [w for label in rels for w in (rel_token, label)] + [sep_token]
        sequences.append(prompt + list(text_words))
        skips.append(len(prompt))
    return tokenizer.encode_batch(sequences, is_pretokenized=True, add_special_tokens=True), skips


def build_batch(
    tokenizer,
    words: list[list[str]],
    entity_labels: list[list[str]],
    relation_labels: list[list[str]],
    *,
    ent_token: str,
    sep_token: str,
    rel_token: str,
    max_width: int,
    pad_id: int = 0,
    pooling: str = "first",
    embed_ent_token: bool = True,
    embed_rel_token: bool = True,
    buckets: dict[str, tuple[int, ...]] | None = None,
) -> Batch:
    """Tokenize prompts + words as gliner does and build padded model inputs.

    `tokenizer` is a `tokenizers.Tokenizer` with padding and truncation off (as
    `RelexModel.from_pretrained` loads it); padding happens here.
    `words` must be non-empty per text (gliner substitutes "[PAD]" for an empty word list).
    `buckets` maps "tokens", "words", "entities", "relations" to allowed padded sizes.
    """
    if not words:
        raise ValueError("build_batch needs at least one text")
    if not len(words) == len(entity_labels) == len(relation_labels):
        raise ValueError(
            f"{len(words)} texts but {len(entity_labels)} entity label lists and {len(relation_labels)} relation label lists"
        )
    empty = [i for i, text_words in enumerate(words) if not text_words]
    if empty:
        raise ValueError(f"texts {empty} have no words (gliner would substitute '[PAD]'; callers drop empty texts)")
    buckets = buckets or {}
    encodings, skips = encode_prompted(tokenizer, words, entity_labels, relation_labels,
                                       ent_token=ent_token, sep_token=sep_token, rel_token=rel_token)
    rows = len(encodings)
    seq_len = _bucket(max(len(e.ids) for e in encodings), buckets.get("tokens"))
    input_ids = np.full((rows, seq_len), pad_id, np.int32)
    attention_mask = np.zeros((rows, seq_len), np.int32)
    words_mask = np.zeros((rows, seq_len), np.int32)
    for r, (encoding, skip) in enumerate(zip(encodings, skips)):
        n = len(encoding.ids)
        input_ids[r, :n] = encoding.ids
        attention_mask[r, :n] = 1
        words_mask[r, :n] = word_mask(encoding.word_ids, skip, pooling)
    lengths = np.array([len(w) for w in words], np.int32)
    num_words = _bucket(int(lengths.max()), buckets.get("words"))
    starts = np.arange(num_words)[:, None] + np.arange(max_width)[None, :]
    span_mask = starts[None] < lengths[:, None, None]
    ent = prompt_positions(
        input_ids, attention_mask, tokenizer.token_to_id(ent_token),
        size=_bucket(max(len(e) for e in entity_labels), buckets.get("entities")), next_token=not embed_ent_token,
    )
    rel = prompt_positions(
        input_ids, attention_mask, tokenizer.token_to_id(rel_token),
        size=_bucket(max(len(r) for r in relation_labels), buckets.get("relations")), next_token=not embed_rel_token,
    )
    return Batch(input_ids, attention_mask, words_mask, lengths, span_mask, *ent, *rel)


def window_starts(num_words: int, size: int, stride: int) -> list[int]:
    """First word of each window of `size` words, `stride` apart, covering all `num_words` words.

    The last window is aligned to the text's end, so no window is shorter than needed.
    """
    if num_words <= size:
        return [0]
    starts = list(range(0, num_words - size + 1, stride))
    if starts[-1] + size < num_words:
        starts.append(num_words - size)
    return starts
