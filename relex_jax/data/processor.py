"""Host-side (numpy) pieces of turning tokenized prompts + texts into model inputs."""

from __future__ import annotations

import numpy as np


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
