"""The gather-free relative-position machinery against transformers' own index computation."""

from __future__ import annotations

import numpy as np
import pytest

from torch_fixtures import torch

from relex_jax.modeling.deberta import log_bucket_position, relative_table_rows, shift_relative_to_absolute

deberta = pytest.importorskip("transformers.models.deberta_v2.modeling_deberta_v2")


@pytest.mark.parametrize("bucket_size,max_position", [(256, 512), (8, 64), (16, 24), (64, 1024)])
def test_log_buckets_equal_transformers(bucket_size, max_position):
    distances = np.arange(-1500, 1501)
    ours = log_bucket_position(distances, bucket_size, max_position)
    theirs = deberta.make_log_bucket_position(torch.from_numpy(distances), bucket_size, max_position)
    np.testing.assert_array_equal(ours, theirs.to(torch.long).numpy())


@pytest.mark.parametrize(
    "seq_len,span,buckets,max_pos",
    [(1, 256, 256, 512), (2, 8, -1, 8), (37, 16, -1, 16), (130, 256, 256, 512), (300, 8, 8, 64)],
)
def test_shifted_rows_reproduce_the_gather_indices(seq_len, span, buckets, max_pos):
    """Gathering our rows and shifting gives exactly transformers' c2p / p2c index matrices."""
    q = torch.zeros(1, seq_len, 1)
    rel = deberta.build_relative_position(q, q, bucket_size=buckets, max_position=max_pos)[0].numpy()
    c2p_expected = np.clip(rel + span, 0, 2 * span - 1)
    p2c_expected = np.clip(-rel + span, 0, 2 * span - 1)  # rows are keys; transposed after the gather
    c2p_rows, p2c_rows = relative_table_rows(seq_len, span, buckets, max_pos)
    for rows, expected in ((c2p_rows, c2p_expected), (p2c_rows, p2c_expected)):
        tiled = np.tile(rows, (seq_len, 1))  # every score row sees the same distance -> row table
        np.testing.assert_array_equal(np.asarray(shift_relative_to_absolute(tiled)), expected)


def test_shift_moves_each_row_by_its_index():
    t = 5
    scores = np.random.default_rng(0).normal(size=(2, 3, t, 2 * t - 1)).astype(np.float32)
    out = np.asarray(shift_relative_to_absolute(scores))
    i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    np.testing.assert_array_equal(out, scores[..., i, j + t - 1 - i])
