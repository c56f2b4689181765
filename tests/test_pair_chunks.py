"""Chunked pair scoring (`relation_logits` over chunks of head rows) against the single einsum."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from relex_jax.modeling import relations
from relex_jax.modeling.mlp import ProjectionMLP
from relex_jax.modeling.relations import pair_chunk_rows, relation_logits

D, R = 16, 3
WIDTH = 4 * D  # the pair MLP's hidden width
UNCHUNKED = 1 << 40


class PairHead(nn.Module):
    """The pair MLP alone, as `RelexModule.relate` uses it."""

    dropout: float = 0.0

    @nn.compact
    def __call__(self, entities, prompts, deterministic=True, chunk_elements=None):
        pair_rep = ProjectionMLP(2 * D, D, self.dropout, name="pair_rep")
        return relation_logits(pair_rep, entities, prompts, deterministic, chunk_elements)


def inputs(size: int, batch: int = 3, seed: int = 0):
    """Random entities (B, E, D) with a ragged entity mask (padding zeroed, as `relate` does), prompts (B, R, D)."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    counts = jnp.array([size, max(size - 3, 0), size // 2][:batch])
    mask = jnp.arange(size)[None, :] < counts[:, None]
    entities = jax.random.normal(k1, (batch, size, D)) * mask[..., None]
    return entities, jax.random.normal(k2, (batch, R, D)), k3


def setup(size: int, batch: int = 3, dropout: float = 0.0):
    """(jitted apply, variables, entities, prompts) for a `PairHead` on `inputs(size, batch)`."""
    entities, prompts, key = inputs(size, batch)
    head = PairHead(dropout)
    variables = jax.jit(head.init)(key, entities, prompts)
    return jax.jit(head.apply, static_argnums=3, static_argnames="chunk_elements"), variables, entities, prompts


def scaled_error(ours, ref) -> float:
    return float(jnp.abs(ours - ref).max() / jnp.abs(ref).max())


@pytest.mark.parametrize("size, rows, used", [(13, 4, 4), (16, 5, 4), (9, 1, 1), (6, 6, 6), (5, 8, 5), (4, 0, 1), (0, 1, 0)])
def test_pair_chunk_rows(size, rows, used):
    """Room for `rows` head rows, `used` taken: 13 rows in 4 chunks of 4 (the last padded); room for
    5 of 16 evened out to 4 chunks of 4; E within one chunk; at least one row however small the
    bound; no entities at all."""
    assert pair_chunk_rows(size, WIDTH, rows * size * WIDTH) == used


@pytest.mark.parametrize("size, rows", [(13, 4), (9, 1), (5, 8)])
def test_chunked_equals_single_einsum(size, rows):
    """E not a multiple of the chunk, one row per chunk, and E within one chunk (the single einsum)."""
    apply, variables, entities, prompts = setup(size)
    program = jax.make_jaxpr(functools.partial(apply, chunk_elements=rows * size * WIDTH))(variables, entities, prompts)
    assert ("scan" in str(program)) == (rows < size)  # lax.map only when one chunk cannot cover E
    chunked = apply(variables, entities, prompts, chunk_elements=rows * size * WIDTH)
    single = apply(variables, entities, prompts, chunk_elements=UNCHUNKED)
    assert chunked.shape == single.shape == (3, size, size, R)
    assert scaled_error(chunked, single) <= 1e-5


def test_chunked_gradients_equal():
    apply, variables, entities, prompts = setup(7)
    weights = jax.random.normal(jax.random.key(1), (3, 7, 7, R))

    def loss(variables, entities, chunk):
        return (apply(variables, entities, prompts, chunk_elements=chunk) * weights).sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    (p_chunked, e_chunked), (p_single, e_single) = (grad(variables, entities, c) for c in (2 * 7 * WIDTH, UNCHUNKED))
    assert pair_chunk_rows(7, WIDTH, 2 * 7 * WIDTH) == 2
    assert scaled_error(e_chunked, e_single) <= 1e-5
    for a, b in zip(jax.tree.leaves(p_chunked), jax.tree.leaves(p_single)):
        assert scaled_error(a, b) <= 1e-5


def test_dropout_masks_differ_between_chunks():
    """Every head row identical: with one dropout key per chunk, chunks get different masks."""
    apply, variables, entities, prompts = setup(8, batch=1, dropout=0.5)
    entities = jnp.broadcast_to(entities[:, :1], entities.shape)
    out = apply(variables, entities, prompts, False, chunk_elements=4 * 8 * WIDTH, rngs={"dropout": jax.random.key(2)})
    assert not jnp.allclose(out[:, :4], out[:, 4:])
    assert not jnp.allclose(out, apply(variables, entities, prompts, True))  # dropout did act


def temp_bytes(size: int, rows: int, monkeypatch) -> int:
    """Scratch memory XLA plans for the compiled pair stage, chunked by the module constant."""
    monkeypatch.setattr(relations, "PAIR_CHUNK_ELEMENTS", rows * size * WIDTH)
    apply, variables, entities, prompts = setup(size, batch=2)
    compiled = apply.lower(variables, entities, prompts).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this jax build has no memory_analysis on this backend")
    return analysis.temp_size_in_bytes


def test_chunked_memory_is_bounded(monkeypatch):
    """With 2 head rows per chunk, scratch memory stays near one (B, 2, E, 4D) block plus the
    (B, E, E, R) logits; the single einsum needs the whole (B, E, E, 4D) hidden tensor."""
    batch, size = 2, 128
    hidden = batch * size * size * WIDTH * 4  # float32 bytes of all pairs' hidden values
    logits = batch * size * size * R * 4
    block = batch * 2 * size * WIDTH * 4
    chunked = temp_bytes(size, 2, monkeypatch)
    single = temp_bytes(size, size, monkeypatch)
    assert single >= hidden
    assert chunked <= 2 * block + 2 * logits < hidden / 4
