"""Where a training run's weights come from (`relex_jax.training.init`): a pretrained backbone with
fresh heads (against gliner's own `from_config`), a relex / gliner checkpoint, and a run's final
model directory converted to gliner and run by gliner with the same results."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from gliner_fixtures import DEFAULT_ENCODER, GLiNER, GLiNERConfig, build_relex_model, build_tokenizer_dir, torch

from relex_jax.checkpoint.convert import gliner_to_relex, relex_to_gliner
from relex_jax.checkpoint.hf_encoder import load_hf_encoder
from relex_jax.inference import RelexModel
from relex_jax.training.config import config_from_dict
from relex_jax.training.init import ModelInit, initial_model, train_tokenizer
from relex_jax.training.loop import train

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")

GLINER_FIELDS = {"hidden_size": 48, "max_width": 4, "relations_layer": "none", "dropout": 0.1, "max_len": 64}
TEXTS = [
    "Maria Lopez works for Northwind Bank in Lisbon .",
    "Born in Oslo , Peter Hansen founded Arcadia Labs in 1999 .",
]


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone")
    build_tokenizer_dir(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    transformers.DebertaV2Model(transformers.DebertaV2Config(vocab_size=len(tokenizer), **DEFAULT_ENCODER)).save_pretrained(path)
    return path


def test_backbone_init_sets_up_prompt_tokens_as_gliner(backbone_dir, tmp_path):
    init = initial_model(ModelInit(init="backbone", path=str(backbone_dir), gliner=GLINER_FIELDS),
                         jax.random.PRNGKey(0), tmp_path)
    reference = GLiNER.from_config(GLiNERConfig(model_name=str(backbone_dir), **GLINER_FIELDS),
                                   backbone_from_pretrained=True, local_files_only=True)
    assert type(reference).__name__ == "UniEncoderSpanRelexGLiNER"
    ours, theirs = init.config, reference.config
    assert (ours.class_token_index, ours.rel_token_index, ours.vocab_size) == (
        theirs.class_token_index, theirs.rel_token_index, theirs.vocab_size)
    assert ours.encoder.vocab_size == theirs.encoder_config.vocab_size
    for name in ("<<ENT>>", "<<SEP>>", "<<REL>>"):
        assert init.tokenizer.token_to_id(name) == reference.data_processor.transformer_tokenizer.convert_tokens_to_ids(name)
    # The backbone's weights, with the table grown by rows at the mean of the old ones.
    _, loaded = load_hf_encoder(backbone_dir)
    ours_backbone = init.variables["params"]["backbone"]
    old = np.asarray(loaded["embeddings"]["word_embeddings"]["embedding"])
    table = ours_backbone["embeddings"]["word_embeddings"]["embedding"]
    np.testing.assert_array_equal(table[: len(old)], old)
    np.testing.assert_allclose(table[len(old):], np.broadcast_to(old.mean(0), (3, old.shape[1])), rtol=1e-6)
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(loaded), jax.tree_util.tree_leaves_with_path(ours_backbone)):
        if "word_embeddings" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))
    # gliner's mean_resizing draws the new rows around the same mean
    torch_table = reference.model.token_rep_layer.bert_layer.model.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_allclose(table[len(old):], torch_table[len(old):], atol=1e-3)
    tokens_on_disk = json.loads((init.tokenizer_dir / "tokenizer.json").read_text())
    assert [t["content"] for t in tokens_on_disk["added_tokens"][-3:]] == ["<<ENT>>", "<<SEP>>", "<<REL>>"]


def test_checkpoint_init_loads_relex_and_gliner_directories(tmp_path):
    _, gliner_dir = build_relex_model(tmp_path / "gliner_model")
    relex_dir = gliner_to_relex(gliner_dir, tmp_path / "relex_model")
    from_relex = initial_model(ModelInit(init="checkpoint", path=str(relex_dir)), jax.random.PRNGKey(0), tmp_path / "a")
    from_gliner = initial_model(ModelInit(init="checkpoint", path=str(gliner_dir)), jax.random.PRNGKey(0), tmp_path / "b")
    assert from_relex.config == from_gliner.config
    for a, b in zip(jax.tree_util.tree_leaves(from_relex.variables), jax.tree_util.tree_leaves(from_gliner.variables)):
        np.testing.assert_array_equal(a, b)
    assert from_relex.tokenizer_dir == relex_dir
    with pytest.raises(ValueError, match="architecture from the checkpoint"):
        ModelInit(init="checkpoint", path=str(relex_dir), gliner={"max_width": 3})


def test_scratch_tokenizer_is_deterministic():
    texts = [s.split() for s in TEXTS * 20]
    assert train_tokenizer(texts, 120).to_str() == train_tokenizer(texts, 120).to_str()


def test_trained_model_runs_in_gliner_with_the_same_results(backbone_dir, tmp_path):
    """Fine-tune from the backbone for a few steps, convert DIR/model to gliner, compare outputs."""
    config = config_from_dict({
        "model": {"init": "backbone", "path": str(backbone_dir), "gliner": GLINER_FIELDS},
        "data": {"train": "synthetic:train:32", "batch_size": 8, "collate": {"type_order": "sorted"},
                 "buckets": {"tokens": [128], "words": [32], "entities": [4], "relations": [8], "gold_entities": [8]}},
        "optim": {"learning_rate": 1e-3, "max_steps": 3, "warmup_steps": 0},
        "train": {"progress": False, "tensorboard": False, "log_every_n_steps": 1},
        "checkpoint": {"every_n_steps": 100},
    })
    summary = train(config, tmp_path / "run", devices=jax.devices()[:1])
    gliner_dir = relex_to_gliner(summary["model_dir"], tmp_path / "as_gliner")
    ours = RelexModel.from_pretrained(summary["model_dir"], devices=jax.devices()[:1])
    theirs = GLiNER.from_pretrained(str(gliner_dir), local_files_only=True)
    theirs.eval()
    labels, relations = ["person", "organization", "location", "date"], ["works for", "born in", "founded"]
    # a low threshold so that a barely trained model still proposes entities and relations
    ours_out = ours.inference(TEXTS, labels, relations, threshold=0.05)
    theirs_out = theirs.inference(TEXTS, labels, relations=relations, threshold=0.05)
    assert sum(map(len, ours_out[0])) > 0
    for mine, ref in zip(ours_out[0], theirs_out[0]):
        assert [(e["start"], e["end"], e["label"]) for e in mine] == [(e["start"], e["end"], e["label"]) for e in ref]
        np.testing.assert_allclose([e["score"] for e in mine], [e["score"] for e in ref], atol=1e-4)
    for mine, ref in zip(ours_out[1], theirs_out[1]):
        assert len(mine) == len(ref)
