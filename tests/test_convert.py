"""gliner <-> relex-jax conversion: lossless round trip, loading, and every error path."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gliner_fixtures import GLiNER, build_relex_model, reference_forward, state_dicts_equal
from test_relex_parity import LABELS, RELATIONS, TEXTS, our_forward

from relex_jax import RelexModel
from relex_jax.checkpoint import convert
from relex_jax.checkpoint.gliner import load_gliner_checkpoint
from relex_jax.checkpoint.torch_mapping import CheckpointMismatchError


@pytest.fixture(scope="module")
def gliner_dir(tmp_path_factory):
    model, path = build_relex_model(tmp_path_factory.mktemp("src") / "model", seed=3, num_rnn_layers=2, hidden_size=48)
    return model, path


@pytest.mark.parametrize(
    "variant",
    [
        {},
        dict(fuse_layers=True, num_rnn_layers=0, relations_layer="gat"),
        dict(triples_layer="ConvKB", hidden_size=768, std=0.1),
        # 1.8 GB core; gliner cannot run its batched TuckER on the calibration texts (36 GB), so no calibration
        pytest.param(dict(triples_layer="TuckER", hidden_size=768, std=0.1, logit_std=None), marks=pytest.mark.slow),
    ],
    ids=["released", "fuser_gat", "convkb", "tucker"],
)
def test_round_trip_is_bit_exact(tmp_path, variant):
    model, src = build_relex_model(tmp_path / "src", seed=1, **variant)
    relex_dir = convert.gliner_to_relex(src, tmp_path / "relex")
    back = convert.relex_to_gliner(relex_dir, tmp_path / "back")
    reloaded = GLiNER.from_pretrained(str(back), local_files_only=True, strict=True)
    assert state_dicts_equal(model.state_dict(), reloaded.state_dict()) == []
    assert json.loads((back / "gliner_config.json").read_text()) == json.loads((src / "gliner_config.json").read_text())
    assert (back / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


def test_relex_dir_and_gliner_dir_give_the_same_model(gliner_dir, tmp_path):
    _, src = gliner_dir
    relex_dir = convert.gliner_to_relex(src, tmp_path / "relex")
    assert {p.name for p in relex_dir.iterdir()} >= {"relex_config.json", "variables", "tokenizer.json"}
    from_relex, from_gliner = RelexModel.from_pretrained(relex_dir), RelexModel.from_pretrained(src)
    assert from_relex.config == from_gliner.config
    assert from_relex.tokenizer is not None and from_relex.tokenizer.get_vocab_size() == from_gliner.config.vocab_size
    for a, b in zip(*(jax_leaves(m.variables) for m in (from_relex, from_gliner))):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_forward_sizes_the_entity_cap_instead_of_cutting(gliner_dir):
    model, src = gliner_dir
    ref = reference_forward(model, TEXTS, LABELS, RELATIONS, threshold=0.05)  # low: many spans pass
    relex = RelexModel.from_pretrained(src, devices=jax.devices()[:1])  # 5 rows: one device
    _, direct, _ = our_forward(src, ref, threshold=0.05, materialize=False)
    needed = int(np.asarray(direct.entity_count).max())
    assert needed > 4
    inputs = _inputs_like_our_forward(relex, ref)
    out = relex.forward(inputs, threshold=0.05, max_entities=None)
    cap = out.entity_mask.shape[1]
    assert cap >= needed and cap & (cap - 1) == 0  # the next power of two (few distinct shapes)
    np.testing.assert_array_equal(np.asarray(out.entity_mask).sum(1), ref["entity_mask"].sum(1))
    with pytest.raises(ValueError, match="more than max_entities=4"):
        relex.forward(inputs, threshold=0.05, max_entities=4)


def _inputs_like_our_forward(relex, ref):
    from relex_jax.data.processor import prompt_positions

    cfg = relex.config
    batch = ref["input_ids"].shape[0]
    ent = prompt_positions(ref["input_ids"], ref["attention_mask"], cfg.class_token_index)
    rel = prompt_positions(ref["input_ids"], ref["attention_mask"], cfg.rel_token_index)
    span_mask = ref["span_mask"].reshape(batch, -1, cfg.max_width)
    return (ref["input_ids"], ref["attention_mask"], ref["words_mask"], ref["text_lengths"][:, 0], span_mask, *ent, *rel)


# ---------------------------------------------------------------------------------------------- errors


@pytest.fixture
def copied(gliner_dir, tmp_path):
    import shutil

    return shutil.copytree(gliner_dir[1], tmp_path / "copy")


def test_missing_config(copied):
    (copied / "gliner_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="gliner_config.json"):
        load_gliner_checkpoint(copied)


def test_missing_weights(copied):
    (copied / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gliner_checkpoint(copied)


def test_unknown_key_is_named(copied):
    tensors = load_file(str(copied / "model.safetensors"))
    tensors["span_rep_layer.span_rep_layer.mystery.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(copied / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="span_rep_layer.span_rep_layer.mystery.weight"):
        load_gliner_checkpoint(copied)


def test_missing_key_is_named(copied):
    tensors = load_file(str(copied / "model.safetensors"))
    del tensors["pair_rep_layer.3.weight"]
    save_file(tensors, str(copied / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="pair_rep/output/kernel"):
        load_gliner_checkpoint(copied)


def test_unused_cross_fuser_keys_are_dropped_with_a_warning(copied, caplog):
    tensors = load_file(str(copied / "model.safetensors"))
    tensors["cross_fuser.layers.0.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(copied / "model.safetensors"))
    load_gliner_checkpoint(copied)
    assert "cross_fuser.layers.0.weight" in caplog.text


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("span_mode", "markerV1", "span_mode='markerV1'"),
        ("span_mode", "token_level", "span_mode='token_level'"),
        ("relations_layer", None, "plain NER model"),
        ("subtoken_pooling", "median", "subtoken_pooling='median'"),
    ],
)
def test_unsupported_settings_are_refused(copied, field, value, message):
    raw = json.loads((copied / "gliner_config.json").read_text())
    raw[field] = value
    (copied / "gliner_config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        load_gliner_checkpoint(copied)


def test_corrupt_weights_file(copied):
    data = (copied / "model.safetensors").read_bytes()
    (copied / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read weights file"):
        load_gliner_checkpoint(copied)


def test_bin_checkpoint_without_torch_says_so(copied, monkeypatch):
    tensors = load_file(str(copied / "model.safetensors"))
    (copied / "model.safetensors").unlink()
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, copied / "pytorch_model.bin")
    load_gliner_checkpoint(copied)  # with torch: works
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs PyTorch"):
        load_gliner_checkpoint(copied)


def test_existing_output_needs_overwrite_and_survives_a_failed_write(gliner_dir, tmp_path, monkeypatch):
    _, src = gliner_dir
    out = convert.gliner_to_relex(src, tmp_path / "relex")
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="overwrite"):
        convert.gliner_to_relex(src, out)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "_copy_tokenizer", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        convert.gliner_to_relex(src, out, overwrite=True)
    assert sorted(p.name for p in out.rglob("*")) == before  # the previous model is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["relex"]  # and no partial directory is left
    RelexModel.from_pretrained(out)


def test_relex_dir_with_foreign_params_is_rejected(gliner_dir, tmp_path):
    _, src = gliner_dir
    out = convert.gliner_to_relex(src, tmp_path / "relex")
    raw = json.loads((out / "relex_config.json").read_text())
    raw["num_rnn_layers"] = 1
    (out / "relex_config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointMismatchError, match="rnn/layer_1"):
        convert.load_relex_dir(out)


def test_command_line_both_directions(gliner_dir, tmp_path, capsys):
    from relex_jax.cli import main

    _, src = gliner_dir
    assert main(["convert", str(src), str(tmp_path / "relex")]) == 0
    assert main(["convert", "--to-gliner", str(tmp_path / "relex"), str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    assert "relex-jax model directory" in out and "gliner checkpoint" in out
    assert (tmp_path / "back" / "model.safetensors").is_file()


def test_python_dash_m_convert_entry_point(gliner_dir, tmp_path):
    import subprocess

    _, src = gliner_dir
    result = subprocess.run(
        [sys.executable, "-m", "convert", str(src), str(tmp_path / "relex")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "relex" / "relex_config.json").is_file()
