"""ONNX export (`relex-jax export --format onnx`): the formulations it needs give what the jitted
ones give, and the graphs, run by onnxruntime, give the jitted model's logits and results.

The export tests need jax2onnx and onnxruntime (the onnx extra) and skip without them."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys

import jax
import numpy as np
import pytest

from test_decoding import assert_same_dicts
from test_export import LONG
from test_relex_parity import LABELS, RELATIONS, TEXTS, scaled_error

from relex_jax import RelexModel, cli
from relex_jax.checkpoint.convert import RELEX_CONFIG
from relex_jax.export import (
    EXPORT_INFO,
    ONNX_INSTALL,
    ONNX_RELATION_STAGE,
    ONNX_SPAN_STAGE,
    RELATION_INPUTS,
    SCORE_FIELDS,
    SPAN_INPUTS,
)
from relex_jax.modeling.relations import select_entities
from relex_jax.modeling.relex import RelexOutput, SpanScores


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


def test_missing_converter_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # importing it now fails
    assert cli.main(["export", str(tmp_path / "model"), str(tmp_path / "out"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "jax2onnx, which is not installed" in err and ONNX_INSTALL in err, err


@dataclasses.dataclass
class OnnxStages(RelexModel):
    """A thin runner: `RelexModel` whose stages are the exported graphs in onnxruntime sessions,
    recording each batch's inputs and outputs."""

    sessions: tuple = None  # (span stage, relation stage) onnxruntime.InferenceSession
    calls: list = dataclasses.field(default_factory=list)  # (span stage feeds, its outputs, relation stage feeds, its outputs)

    @functools.cached_property
    def _stages(self):
        span, relation = self.sessions

        def run(session, feeds):
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))

        def score(variables, *inputs, keep_prompts=False):
            feeds = dict(zip(SPAN_INPUTS, map(np.asarray, inputs)))
            out = run(span, feeds)
            self.calls.append((feeds, out))
            return SpanScores(*(out[name] for name in SCORE_FIELDS))

        def relate(variables, scores, span_mask, entity_prompt_mask, threshold, adjacency_threshold, max_entities):
            fields = [getattr(scores, name) for name in SCORE_FIELDS]
            edge = threshold if adjacency_threshold is None else adjacency_threshold
            feeds = dict(zip(RELATION_INPUTS, [*fields, np.asarray(span_mask), np.asarray(entity_prompt_mask),
                                               np.asarray(threshold), np.asarray(edge), np.zeros(max_entities, bool)]))
            out = RelexOutput(entity_logits=scores.entity_logits, entity_count=scores.entity_count, **run(relation, feeds))
            self.calls[-1] += (feeds, out)
            return out

        return score, None, relate, None


@pytest.fixture(scope="module")
def onnx_exported(tmp_path_factory):
    ort = pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime (the onnx extra)")
    pytest.importorskip("jax2onnx", reason=f"ONNX export needs jax2onnx: {ONNX_INSTALL}")
    pytest.importorskip("torch")
    from gliner_fixtures import build_relex_model

    root = tmp_path_factory.mktemp("onnx")
    _, path = build_relex_model(root / "model", seed=1, backbone="deberta-v2")
    assert cli.main(["export", str(path), str(root / "exported"), "--format", "onnx"]) == 0
    jitted = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    sessions = tuple(ort.InferenceSession(str(root / "exported" / name)) for name in (ONNX_SPAN_STAGE, ONNX_RELATION_STAGE))
    loaded = OnnxStages(jitted.config, jitted.module, jitted.variables, jitted.tokenizer, jitted.model_dir,
                        devices=jitted.devices, sessions=sessions)
    return jitted, loaded, root / "exported"


def test_onnx_export_files(onnx_exported):
    *_, out = onnx_exported
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["format"] == "onnx" and info["stages"] == [ONNX_SPAN_STAGE, ONNX_RELATION_STAGE]
    assert (out / RELEX_CONFIG).is_file() and (out / "tokenizer.json").is_file() and not (out / "variables").exists()
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(out / ONNX_RELATION_STAGE), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["span_hidden"][:2] == ["b", "w"] and dims["slots"] == ["e"]


def test_onnx_inference_equals_jitted(onnx_exported):
    """Decoded results equal through the graphs, on batches of different sizes (every size
    symbolic: batch, tokens, words, labels, entity cap), and the raw logits within 1e-5 of scale,
    each stage checked on the same inputs as the jitted one."""
    jitted, loaded, _ = onnx_exported
    settings = dict(threshold=0.3, relation_threshold=0.2, window_size=40)
    calls = [(TEXTS[:3] + ["", LONG], [LABELS, LABELS[:2], {"human": "person", "place": "location"}, LABELS, LABELS],
              RELATIONS), (TEXTS[3:5], LABELS[:2], RELATIONS[:1])]
    results = [(loaded.inference(*call, **settings), jitted.inference(*call, **settings)) for call in calls]
    shapes = {tuple(feeds["input_ids"].shape) + (feeds["relation_prompt_mask"].shape[1], relation_feeds["slots"].size)
              for feeds, _, relation_feeds, _ in loaded.calls}
    assert len(shapes) == len(loaded.calls) > 1, shapes
    score, _, relate, _ = jitted._stages
    for feeds, scores, relation_feeds, ours in loaded.calls:
        theirs = score(jitted.variables, *feeds.values())
        for name in SCORE_FIELDS:
            assert_close(scores[name], getattr(theirs, name), name)
        # the relation stage on the graph's span scores: the same selection, so exact masks
        theirs = relate(jitted.variables, SpanScores(*(scores[name] for name in SCORE_FIELDS)), feeds["span_mask"],
                        feeds["entity_prompt_mask"], feeds["threshold"], None, max_entities=relation_feeds["slots"].size)
        for name in ("entity_index", "entity_mask", "pair_mask"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
        for name in ("entities", "relation_logits"):
            assert_close(getattr(ours, name), getattr(theirs, name), name)
    for ours, theirs in results:
        # probabilities: a sigmoid of logits of magnitude ~20 turns 1e-5 of scale into ~5e-5
        assert_same_dicts(ours[0], theirs[0], tol=1e-4)
        assert_same_dicts(ours[1], theirs[1], tol=1e-4)
    assert sum(len(rels) for _, (_, theirs) in results for rels in theirs) > 0, "not vacuous"


def assert_close(ours, theirs, what):
    """Integers equal; logits within 1e-5 of their scale, the vectors they come from within 1e-4
    (onnxruntime sums in another order: ~2e-6 at the encoder's output, grown by the BiLSTM)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.dtype.kind in "biu":
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
    else:
        assert scaled_error(ours, theirs) <= (1e-5 if what.endswith("logits") else 1e-4), what
