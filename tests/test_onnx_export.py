"""ONNX export: the formulations it needs select what the jitted ones select."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from relex_jax.modeling.relations import select_entities


@pytest.mark.parametrize("cap", [1, 5, 25])  # 25: more slots than a text has spans (21)
def test_scatter_free_selection_equals_nonzero(cap):
    """Ragged rows (padded spans and labels), probabilities tied at the threshold, a row where
    nothing passes and rows where more than the cap pass: same indices, mask and counts."""
    rng = np.random.default_rng(cap)
    batch, words, width, labels = 6, 7, 3, 4
    logits = rng.choice(np.float32([-2.0, 0.0, 0.5, 2.0]), size=(batch, words, width, labels))  # sigmoid(0) = threshold
    span_mask = rng.random((batch, words, width)) < 0.8
    span_mask[1, 3:] = False  # a shorter text
    class_mask = np.ones((batch, labels), bool)
    class_mask[2, 2:] = False  # fewer labels
    logits[3] = -5.0  # nothing passes
    logits[4] = 5.0  # everything in the text passes
    args = (logits, span_mask, class_mask, np.float32(0.5))
    old, new = (jax.jit(functools.partial(select_entities, max_entities=cap, scatter=s))(*args) for s in (True, False))
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)
    count = np.asarray(old[2])
    assert count[3] == 0 and count[4] == span_mask[4].sum() and (cap > 21 or count[4] > cap), count
