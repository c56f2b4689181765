"""`load_hf_encoder`: checkpoint formats, task-model prefixes, and clear errors for bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from torch_fixtures import build_deberta, ragged_batch, torch, torch_last_hidden, transformers

import relex_jax
from relex_jax.checkpoint.torch_mapping import CheckpointMismatchError

SMALL = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    relative_attention=True, position_buckets=16, pos_att_type="p2c|c2p", share_att_key=True,
    norm_rel_ebd="layer_norm", position_biased_input=False,
)


def _outputs_match(path, torch_model):
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(0), SMALL["vocab_size"], [12, 7])
    ref = torch_last_hidden(torch_model, ids, mask)
    out = np.asarray(module.apply({"params": params}, ids, mask))
    valid = mask.astype(bool)
    return np.abs(out - ref)[valid].max() <= 1e-5 * np.abs(ref[valid]).max()


@pytest.fixture
def saved(tmp_path):
    model = build_deberta(tmp_path, seed=0, **SMALL)
    return tmp_path, model


def test_pytorch_model_bin(tmp_path):
    model = build_deberta(tmp_path, seed=1, safetensors=False, **SMALL)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    assert _outputs_match(tmp_path, model)


def test_task_model_checkpoint_keeps_backbone_and_drops_heads(tmp_path):
    config = transformers.DebertaV2Config(**SMALL)
    torch.manual_seed(0)
    mlm = transformers.DebertaV2ForMaskedLM(config).eval()
    mlm.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert any(k.startswith("deberta.") for k in keys) and any(not k.startswith("deberta.") for k in keys)
    assert _outputs_match(tmp_path, mlm.deberta)


def test_unused_position_embeddings_are_ignored_like_transformers(saved):
    path, model = saved
    tensors = load_file(str(path / "model.safetensors"))
    tensors["embeddings.position_embeddings.weight"] = np.zeros((512, 32), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    assert _outputs_match(path, model)


def test_unexpected_key_is_named(saved):
    path, _ = saved
    tensors = load_file(str(path / "model.safetensors"))
    tensors["encoder.layer.0.attention.self.mystery.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="encoder.layer.0.attention.self.mystery.weight"):
        relex_jax.load_hf_encoder(path)


def test_missing_key_is_named(saved):
    path, _ = saved
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["encoder.layer.1.intermediate.dense.bias"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="encoder/layer_1/intermediate/dense/bias"):
        relex_jax.load_hf_encoder(path)


def test_shape_mismatch_is_named(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 48
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight"):
        relex_jax.load_hf_encoder(path)


def test_wrong_model_type_is_rejected(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "roberta"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported encoder model_type 'roberta'; supported: bert, deberta-v2"):
        relex_jax.load_hf_encoder(path)


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2", **SMALL}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        relex_jax.load_hf_encoder(tmp_path)


def test_hub_id_offline_fails_clearly(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not fetch 'microsoft/deberta-v3-small' from the Hugging Face hub"):
        relex_jax.load_hf_encoder("microsoft/deberta-v3-small")


def test_scanned_layout_loads(saved):
    path, _ = saved
    plain, params = relex_jax.load_hf_encoder(path)
    scanned, scanned_params = relex_jax.load_hf_encoder(path, scan_layers=True)
    assert scanned_params["encoder"]["layers"]["layer"]["intermediate"]["dense"]["kernel"].shape == (2, 32, 64)
    ids = jnp.ones((1, 6), jnp.int32)
    np.testing.assert_allclose(
        scanned.apply({"params": scanned_params}, ids), plain.apply({"params": params}, ids), rtol=0, atol=1e-5
    )


def test_load_from_a_fresh_interpreter(saved):
    """The acceptance one-liner: `import relex_jax; relex_jax.load_hf_encoder(DIR)`."""
    path, _ = saved
    code = f"import relex_jax; m, p = relex_jax.load_hf_encoder({str(path)!r}); print(type(m).__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DebertaV2Model"
