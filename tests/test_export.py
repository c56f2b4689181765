"""StableHLO export (`relex_jax.export`): the exported stages, run through `load_stablehlo`, give
`inference` exactly the jitted model's results, on both backbones, with every size symbolic."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import export

from test_decoding import assert_same_dicts
from test_relex_parity import LABELS, RELATIONS, TEXTS

from relex_jax import RelexModel, cli
from relex_jax.export import load_stablehlo
from relex_jax.modeling.deberta import relative_rows, relative_table_rows

pytest.importorskip("torch")

LONG = " ".join(TEXTS * 3)  # read as windows below


@pytest.fixture(scope="module", params=["deberta-v2", "bert"])
def exported(request, tmp_path_factory):
    from gliner_fixtures import build_relex_model

    root = tmp_path_factory.mktemp(f"export_{request.param}")
    _, path = build_relex_model(root / "model", seed=1, backbone=request.param)
    assert cli.main(["export", str(path), str(root / "exported")]) == 0
    one = jax.devices()[:1]
    return RelexModel.from_pretrained(path, devices=one), load_stablehlo(root / "exported")


def test_exported_inference_equals_jitted(exported, capsys):
    jitted, loaded = exported
    assert not loaded.compiled_shapes
    texts = TEXTS[:3] + ["", LONG]  # a long text read as windows, an empty one
    labels = [LABELS, LABELS[:2], {"human": "person", "place": "location"}, LABELS, LABELS]  # ragged label sets
    settings = dict(threshold=0.3, relation_threshold=0.2, window_size=40)
    ours = loaded.inference(texts, labels, RELATIONS, **settings)
    theirs = jitted.inference(texts, labels, RELATIONS, **settings)
    assert_same_dicts(ours[0], theirs[0], tol=1e-6)
    assert_same_dicts(ours[1], theirs[1], tol=1e-6)
    assert sum(map(len, theirs[0])) > len(texts) and sum(map(len, theirs[1])) > 0, "not vacuous"
    assert max(cap for _, cap in loaded.compiled_shapes) > 8, "the symbolic entity cap went beyond its smallest size"
    with pytest.raises(ValueError, match="exported model has no packed"):
        loaded.inference(TEXTS[:2], LABELS, RELATIONS, packing=True)


@pytest.mark.parametrize("span,buckets,max_position", [(256, 256, 512), (4, 4, 8), (6, -1, 6)])
def test_symbolic_relative_rows_equal_the_static_table(span, buckets, max_position):
    """DeBERTa's relative-position rows for a symbolic length (looked up by clipped distance)
    equal the numpy rows of each concrete length, past the saturation distance too."""
    (t,) = export.symbolic_shape("t")
    rows = export.export(jax.jit(lambda x: relative_rows(x.shape[0], span, buckets, max_position)))(
        jax.ShapeDtypeStruct((t,), np.int32))
    for length in (1, 2, 7, 40):
        got = rows.call(np.zeros(length, np.int32))
        for ours, theirs in zip(got, relative_table_rows(length, span, buckets, max_position)):
            np.testing.assert_array_equal(ours, theirs)


def test_export_cli_rejects_bad_input(exported, tmp_path, capsys):
    jitted, _ = exported
    assert cli.main(["export", str(jitted.model_dir), str(tmp_path / "out"), "--format", "tflite"]) == 2
    assert "unsupported format 'tflite'" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert cli.main(["export", str(jitted.model_dir), str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a directory written by relex-jax export"):
        load_stablehlo(jitted.model_dir)
