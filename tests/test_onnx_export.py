"""ONNX export (`relex-jax export --format onnx`): the formulations it needs give what the jitted
ones give, and the graphs, run by onnxruntime, give the jitted model's logits and results.

The export tests need jax2onnx and onnxruntime (the onnx extra) and skip without them."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from test_decoding import assert_same_dicts
from test_runtime_imports import BLOCK_JAX, ROOT
from test_export import LONG
from test_relex_parity import LABELS, RELATIONS, TEXTS, scaled_error

from relex_jax import RelexModel, cli
from relex_jax.checkpoint.convert import RELEX_CONFIG
from relex_jax.export import (
    EXPORT_INFO,
    ONNX_INSTALL,
    ONNX_RELATION_STAGE,
    ONNX_SPAN_STAGE,
    SCORE_FIELDS,
)
from relex_jax.modeling.deberta import gather_relative_to_absolute, shift_relative_to_absolute
from relex_jax.modeling.relations import select_entities
from relex_jax.modeling.relex import SpanScores, pool_row_words, pool_words, word_slots
from relex_jax.modeling.triples import _spectrum
from relex_jax.runtime import OnnxRelexModel


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


@pytest.mark.parametrize("mode", ["first", "last", "mean"])
def test_word_pooling_contraction_equals_segment_sum(mode):
    """Words that are missing, cut by the word grid or padded, tokens of no word: same vectors."""
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(3, 9, 4)).astype(np.float32)
    words_mask = rng.integers(0, 7, size=(3, 9)).astype(np.int32)  # 0: no word; 6 > W: cut
    num_words = 5
    ours = pool_row_words(tokens, words_mask, num_words, mode)
    rows = np.broadcast_to(np.arange(3)[:, None], words_mask.shape)
    theirs = pool_words(tokens, word_slots(words_mask, rows, 3, num_words), 3, num_words, mode)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="max"):
        pool_row_words(tokens, words_mask, num_words, "max")


@pytest.mark.parametrize("length", [1, 2, 7])
def test_relative_shift_gather_equals_reshape(length):
    scores = np.random.default_rng(length).normal(size=(2, 3, length, 2 * length - 1)).astype(np.float32)
    np.testing.assert_array_equal(gather_relative_to_absolute(scores), shift_relative_to_absolute(scores))


@pytest.mark.parametrize("dim", [7, 64])
def test_spectrum_contraction_equals_rfft(dim):
    """HolE's spectrum for export (DFT cosines and sines) against `jnp.fft.rfft`, odd and even D."""
    x = np.random.default_rng(dim).normal(size=(2, 3, dim)).astype(np.float32)
    for ours, theirs in zip(_spectrum(x, exportable=True), _spectrum(x)):
        assert scaled_error(ours, theirs) <= 1e-6


def test_missing_converter_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # importing it now fails
    assert cli.main(["export", str(tmp_path / "model"), str(tmp_path / "out"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "jax2onnx, which is not installed" in err and ONNX_INSTALL in err, err


@dataclasses.dataclass
class Recording(OnnxRelexModel):
    """`OnnxRelexModel` keeping each batch's inputs and outputs."""

    calls: list = dataclasses.field(default_factory=list)

    def _forward(self, inputs, threshold, *args, **kwargs):
        scores, out = super()._forward(inputs, threshold, *args, **kwargs)
        self.calls.append((inputs, threshold, scores, out))
        return scores, out


@pytest.fixture(scope="module")
def onnx_exported(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime (the onnx extra)")
    pytest.importorskip("jax2onnx", reason=f"ONNX export needs jax2onnx: {ONNX_INSTALL}")
    pytest.importorskip("torch")
    from gliner_fixtures import build_relex_model

    root = tmp_path_factory.mktemp("onnx")
    _, path = build_relex_model(root / "model", seed=1, backbone="deberta-v2")
    assert cli.main(["export", str(path), str(root / "exported"), "--format", "onnx"]) == 0
    jitted = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    loaded = OnnxRelexModel.from_pretrained(root / "exported")
    return jitted, Recording(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)}), root / "exported"


def test_onnx_export_files(onnx_exported):
    *_, out = onnx_exported
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["format"] == "onnx" and info["stages"] == [ONNX_SPAN_STAGE, ONNX_RELATION_STAGE]
    assert (out / RELEX_CONFIG).is_file() and (out / "tokenizer.json").is_file() and not (out / "variables").exists()
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(out / ONNX_RELATION_STAGE), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["span_hidden"][:2] == ["b", "w"] and dims["slots"] == ["e"]


SETTINGS = dict(threshold=0.3, relation_threshold=0.2, window_size=40)
CALLS = [(TEXTS[:3] + ["", LONG], [LABELS, LABELS[:2], {"human": "person", "place": "location"}, LABELS, LABELS],
          RELATIONS), (TEXTS[3:5], LABELS[:2], RELATIONS[:1])]


def test_onnx_inference_equals_jitted(onnx_exported):
    """`OnnxRelexModel` gives the jitted model's results, on batches of different sizes (every
    size symbolic: batch, tokens, words, labels, entity cap; a long text read as windows), and
    each stage, on the same inputs as the jitted one, its logits within 1e-5 of scale."""
    jitted, loaded, _ = onnx_exported
    results = [(loaded.inference(*call, **SETTINGS), jitted.inference(*call, **SETTINGS)) for call in CALLS]
    shapes = {tuple(inputs[0].shape) + (inputs[-1].shape[1], out.entity_index.shape[1])
              for inputs, _, _, out in loaded.calls}
    assert len(shapes) == len(loaded.calls) > 1, shapes
    score, _, relate, _ = jitted._stages
    for inputs, threshold, scores, ours in loaded.calls:
        theirs = score(jitted.variables, *inputs, np.float32(threshold))
        for name in SCORE_FIELDS:
            assert_close(scores[name], getattr(theirs, name), name)
        # the relation stage on the graph's span scores: the same selection, so exact masks
        theirs = relate(jitted.variables, SpanScores(*(scores[name] for name in SCORE_FIELDS)), inputs[4], inputs[6],
                        np.float32(threshold), None, max_entities=ours.entity_index.shape[1])
        for name in ("entity_index", "entity_mask", "pair_mask"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
        for name in ("entities", "relation_logits"):
            assert_close(getattr(ours, name), getattr(theirs, name), name)
    for ours, theirs in results:
        # probabilities: a sigmoid of logits of magnitude ~20 turns 1e-5 of scale into ~5e-5
        assert_same_dicts(ours[0], theirs[0], tol=1e-4)
        assert_same_dicts(ours[1], theirs[1], tol=1e-4)
    assert sum(len(rels) for _, (_, theirs) in results for rels in theirs) > 0, "not vacuous"
    with pytest.raises(ValueError, match="does not run packing"):
        loaded.inference(TEXTS[:2], LABELS, RELATIONS, packing=True)


def test_runtime_runs_without_jax(onnx_exported, tmp_path):
    """`OnnxRelexModel` in a process where importing jax (flax, optax, orbax) fails: the
    jitted model's results."""
    jitted, _, out = onnx_exported
    texts, labels, relations = CALLS[0]
    script = BLOCK_JAX + textwrap.dedent(f'''
        import json, sys
        from relex_jax.runtime import OnnxRelexModel

        model = OnnxRelexModel.from_pretrained({str(out)!r})
        result = model.inference({texts!r}, {labels!r}, {relations!r}, **{SETTINGS!r})
        assert not {{"jax", "flax", "optax", "orbax"}} & {{m.split(".")[0] for m in sys.modules}}
        print(json.dumps(result))
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    theirs = jitted.inference(texts, labels, relations, **SETTINGS)
    assert_same_dicts(ours[0], theirs[0], tol=1e-4)
    assert_same_dicts(ours[1], theirs[1], tol=1e-4)


def assert_close(ours, theirs, what):
    """Integers equal; logits within 1e-5 of their scale, the vectors they come from within 1e-4
    (onnxruntime sums in another order: ~2e-6 at the encoder's output, grown by the BiLSTM)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.dtype.kind in "biu":
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
    else:
        assert scaled_error(ours, theirs) <= (1e-5 if what.endswith("logits") else 1e-4), what
