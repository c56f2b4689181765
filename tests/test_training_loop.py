"""The training run: configs, sharded steps (8 simulated devices vs 1), exact resume after a
kill, model initialisation, and the tiny_cpu recipe end to end through `python -m train`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from relex_jax.data.synthetic import generate_examples
from relex_jax.inference import RelexModel
from relex_jax.training.config import apply_overrides, config_from_dict, load_config
from relex_jax.data.stream import BatchStream
from relex_jax.training.loop import default_buckets, pad_step_batch, train
from relex_jax.training.sharding import (
    MeshConfig, batch_sharding, logical_axes, make_mesh, partition_spec, train_state_shardings,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")

# A very small run: 2-layer encoder of width 32, synthetic data, one padded shape.
SMALL_RUN = {
    "seed": 3,
    "model": {
        "init": "scratch", "vocab_size": 400,
        "encoder": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "relative_attention": True, "position_buckets": 32, "pos_att_type": "p2c|c2p",
                    "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False},
        "gliner": {"hidden_size": 32, "max_width": 4, "relations_layer": "none", "dropout": 0.1, "max_len": 64},
    },
    "data": {"train": "synthetic:train:96", "batch_size": 8, "collate": {"type_order": "sorted"},
             "buckets": {"tokens": [96], "words": [32], "entities": [4], "relations": [8], "gold_entities": [8]}},
    "optim": {"learning_rate": 1e-3, "max_steps": 6, "warmup_steps": 2},
    "train": {"log_every_n_steps": 1, "progress": False, "tensorboard": False},
    "checkpoint": {"every_n_steps": 2, "keep": 5, "async_save": True},
}


def small_config(**sections):
    raw = json.loads(json.dumps(SMALL_RUN))
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def losses(workdir: Path) -> list[tuple[int, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def final_params(workdir: Path):
    model = RelexModel.from_pretrained(workdir / "model", devices=jax.devices()[:1])
    return jax.tree_util.tree_leaves_with_path(jax.device_get(model.variables["params"]))


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses_and_states_its_command(path):
    config = load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config configs/{path.name}" in first, first
    assert "python -m train" in first or "relex-jax train" in first
    assert config.optim.max_steps >= 1
    assert config.to_dict()["model"]["init"] == config.model.init


def test_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"tiny_cpu.yaml", "conll04.yaml"} <= names
    assert any("pod" in n or "tpu" in n for n in names), names


def test_overrides_and_errors():
    raw = apply_overrides({}, ["optim.learning_rate=2e-4", "mesh.fsdp=2", "data.collate.shuffle_types=false",
                               "model.gliner.max_width=8"])
    config = config_from_dict(raw)
    assert config.optim.learning_rate == 2e-4 and config.mesh.fsdp == 2
    assert config.data.collate == {"shuffle_types": False} and config.model.gliner == {"max_width": 8}
    with pytest.raises(ValueError, match="did you mean optim.learning_rate"):
        config_from_dict({"optim": {"learnin_rate": 1.0}})
    with pytest.raises(ValueError, match="unknown config key config.optimizer"):
        config_from_dict({"optimizer": {}})
    with pytest.raises(ValueError, match="loss.focal_alpha"):
        config_from_dict({"loss": {"focal_alpha": 0.5}})
    with pytest.raises(ValueError, match="dotted.key=value"):
        apply_overrides({}, ["optim.learning_rate"])
    with pytest.raises(ValueError, match="data.buckets.token is not a bucketed dimension; known: tokens, words"):
        config_from_dict({"data": {"buckets": {"token": [64]}}})
    with pytest.raises(ValueError, match="data.buckets.words must be a list of positive sizes"):
        config_from_dict({"data": {"buckets": {"words": 64}}})
    with pytest.raises(ValueError, match="data.buckets.tokens must be a list of positive sizes"):
        config_from_dict({"data": {"buckets": {"tokens": [64, True]}}})  # YAML `true` is not a size
    with pytest.raises(ValueError, match="model.path"):
        config_from_dict({"model": {"init": "backbone"}})
    with pytest.raises(ValueError, match="eval.best_metric"):
        config_from_dict({"eval": {"best_metric": "relation.f1"}})


# --------------------------------------------------------------------------------------------------
# Sharding rules
# --------------------------------------------------------------------------------------------------


def test_partition_specs_follow_the_rules(eight_devices):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    axes = logical_axes("backbone/encoder/layer_0/intermediate/dense/kernel", 2)
    assert axes == ("embed", "mlp")
    assert tuple(partition_spec(axes, (64, 128), mesh)) == ("fsdp", "tensor")
    # A dimension that does not divide stays whole; a mesh axis is used once per array.
    assert tuple(partition_spec(axes, (63, 128), mesh)) == (None, "tensor")
    assert tuple(partition_spec(("embed", "embed"), (64, 48), mesh)) == ("fsdp", None)
    # Scanned (stacked) layers get a leading replicated axis; unknown leaves replicate.
    assert logical_axes("backbone/encoder/layers/layer/intermediate/dense/kernel", 3) == ("layers", "embed", "mlp")
    assert logical_axes("span_rep/whatever/scale", 1) == (None,)
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh(MeshConfig(data=4, fsdp=4))
    with pytest.raises(ValueError, match="at most one -1"):
        MeshConfig(data=-1, fsdp=-1)


def test_optimizer_state_is_sharded_like_its_parameters(eight_devices):
    from relex_jax.training.optim import OptimConfig, make_optimizer
    from relex_jax.training.step import create_train_state

    mesh = make_mesh(MeshConfig(data=4, fsdp=2))
    params = {"backbone": {"embeddings": {"word_embeddings": {"embedding": np.zeros((10, 8), np.float32)}}},
              "span_rep": {"out_project": {"hidden": {"kernel": np.zeros((8, 16), np.float32),
                                                      "bias": np.zeros(16, np.float32)}}}}
    optimizer = make_optimizer(OptimConfig(gradient_accumulation_steps=2))
    abstract = jax.eval_shape(lambda p: create_train_state({"params": p}, optimizer), params)
    shardings = train_state_shardings(abstract, mesh)
    specs = {jax.tree_util.keystr(p): tuple(s.spec) for p, s in jax.tree_util.tree_leaves_with_path(shardings)}
    kernel_specs = {k: v for k, v in specs.items() if k.endswith("['hidden']['kernel']")}
    # params, Adam mu and nu, and the accumulated gradient of MultiSteps: all sharded alike
    assert len(kernel_specs) >= 4 and set(kernel_specs.values()) == {("fsdp", None)}, kernel_specs
    assert specs[".step"] == ()
    assert tuple(batch_sharding(mesh).spec) == (("data", "fsdp"),)


# --------------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------------


def test_batch_stream_is_a_function_of_the_batch_number():
    examples = generate_examples(20, seed=1)
    stream = BatchStream(examples, rows=6, seed=5)
    again = BatchStream(examples, rows=6, seed=5)
    later = [again.batch(n)[0] for n in (7, 2, 0)]
    assert [stream.batch(n)[0] for n in (7, 2, 0)] == later
    epoch0 = [ex for n in range(3) for ex in stream.batch(n)[0]]
    assert len({id(ex) for ex in epoch0}) == 18  # an epoch has no repeats; 2 examples wait for a later one
    assert stream.batch(3)[2] == 1 and stream.batch(0)[1].random() == again.batch(0)[1].random()
    assert stream.check_position(stream.position(4)) == 4
    with pytest.raises(ValueError, match="data position"):
        BatchStream(examples[:19], rows=6, seed=5).check_position(stream.position(4))


def test_default_buckets_fix_the_label_counts(tmp_path):
    """Without `data.buckets`, type sampling and augmentation change how many entity and relation
    labels a batch asks for; every batch must still get the same label sizes (no extra compilations)."""
    from relex_jax.data.synthetic import ENTITY_TYPES, RELATION_TYPES
    from relex_jax.data.collate import CollateConfig, collate
    from relex_jax.training.init import ModelInit, initial_model

    examples = generate_examples(240, seed=2)
    init = initial_model(ModelInit(**SMALL_RUN["model"]), jax.random.PRNGKey(0), tmp_path,
                         [ex.tokens for ex in examples])
    cfg = CollateConfig.from_relex_config(init.config, type_order="sorted")
    assert cfg.augment_data_prob > 0 and cfg.max_neg_type_ratio > 0  # label counts do vary
    buckets = default_buckets(examples, cfg)
    assert buckets["entities"] == (len(ENTITY_TYPES) + 1,)  # + the augmentation's "other"
    assert buckets["relations"] == (len(RELATION_TYPES),)
    stream = BatchStream(examples, rows=8, seed=0)
    label_sizes, wanted = set(), set()
    for n in range(60):
        batch_examples, rng, _ = stream.batch(n)
        batch = collate(batch_examples, init.tokenizer, cfg, rng, buckets=buckets)
        wanted.add(max(len(types) for types in batch.entity_types))
        label_sizes.add((batch.inputs.entity_prompt_index.shape[1], batch.inputs.relation_prompt_index.shape[1]))
    assert len(wanted) > 1  # the batches really asked for different numbers of entity labels
    assert label_sizes == {(len(ENTITY_TYPES) + 1, len(RELATION_TYPES))}

    fixed = [dataclasses.replace(ex, ner_labels=tuple(f"type {i}" for i in range(9))) for ex in examples[:4]]
    capped = dataclasses.replace(cfg, max_types=2)
    assert default_buckets(fixed, capped)["entities"] == (9,)  # fixed lists are not capped by max_types
    assert default_buckets(examples, capped)["entities"] == (2,)
    assert default_buckets(examples[:0], cfg)["relations"] == (1,)

    # `data.buckets` replaces only the dimensions it names: finer token buckets keep the label sizes.
    finer = default_buckets(examples, cfg, {"tokens": [48, 96], "gold_entities": []})
    assert finer == {**buckets, "tokens": (48, 96), "gold_entities": ()}


def test_a_resumed_start_takes_the_shapes_without_drawing_them(tmp_path):
    """A resumed run reads its parameters from the checkpoint: its start only needs their shapes,
    not the eager random draws (seconds of per-op compilation before anything else happens)."""
    from relex_jax.training.init import ModelInit, initial_model

    texts = [ex.tokens for ex in generate_examples(96)]
    drawn = initial_model(ModelInit(**SMALL_RUN["model"]), jax.random.PRNGKey(0), tmp_path / "a", texts)
    shapes = initial_model(ModelInit(**SMALL_RUN["model"]), jax.random.PRNGKey(0), tmp_path / "b", texts,
                           shapes_only=True)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(shapes.variables))
    assert (jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), drawn.variables)
            == jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), shapes.variables))
    assert shapes.config == drawn.config


def test_padding_a_batch_changes_no_loss(tmp_path):
    """Multi-host hosts pad their rows to a common shape: it must be invisible to the loss."""
    from relex_jax.data.collate import CollateConfig, collate
    from relex_jax.training.init import ModelInit, initial_model
    from relex_jax.training.losses import LossConfig
    from relex_jax.training.step import StepBatch, loss_fn, training_module

    examples = generate_examples(4, seed=0)
    init = initial_model(ModelInit(**SMALL_RUN["model"]), jax.random.PRNGKey(0), tmp_path,
                         [ex.tokens for ex in generate_examples(96)])
    cfg = CollateConfig.from_relex_config(init.config).deterministic()
    batch = StepBatch.from_training_batch(collate(examples, init.tokenizer, cfg))
    sizes = {"T": batch.input_ids.shape[1] + 5, "W": batch.span_mask.shape[1] + 3, "K": batch.span_mask.shape[2],
             "C": batch.entity_prompt_index.shape[1] + 2, "R": batch.relation_prompt_index.shape[1] + 1,
             "E": batch.entity_index.shape[1] + 4}
    padded = pad_step_batch(batch, sizes, pad_id=0)
    assert padded.relation_labels.shape[1:] == (sizes["E"], sizes["E"], sizes["R"])
    module = training_module(init.config)
    loss_config = LossConfig.from_relex_config(init.config)
    params = init.variables["params"]
    a, ma = loss_fn(params, batch, module=module, loss_config=loss_config)
    b, mb = loss_fn(params, padded, module=module, loss_config=loss_config)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    for key in ma:
        np.testing.assert_allclose(float(mb[key]), float(ma[key]), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


def test_eight_devices_data_4_fsdp_2_match_one_device(tmp_path, eight_devices):
    one = train(small_config(mesh={"data": 1}), tmp_path / "one", devices=eight_devices[:1])
    eight = train(small_config(mesh={"data": 4, "fsdp": 2}), tmp_path / "eight", devices=eight_devices)
    assert one["step"] == eight["step"] == 6
    a, b = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    # Measured: losses within 1e-7 relative, parameters within 2e-7 absolute (reduction order).
    np.testing.assert_allclose([l for _, l in b], [l for _, l in a], rtol=1e-5)
    assert a[-1][1] < 0.8 * a[0][1]  # it trains
    for (path, x), (_, y) in zip(final_params(tmp_path / "one"), final_params(tmp_path / "eight")):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=2e-6, err_msg=jax.tree_util.keystr(path))


def test_killed_run_resumes_bit_exactly(tmp_path):
    config = small_config()
    devices = jax.devices()[:2]
    full = train(config, tmp_path / "full", devices=devices)
    # "Killed" right after step 3: the last checkpoint is step 2, step 3 is redone after the resume.
    stopped = train(config, tmp_path / "resumed", devices=devices, stop_at_step=3)
    assert stopped["stopped_at"] == 3 and not (tmp_path / "resumed" / "model").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "resumed", devices=devices)
    resumed = train(config, tmp_path / "resumed", resume=True, devices=devices)
    assert resumed["step"] == full["step"] == 6
    assert losses(tmp_path / "resumed") == losses(tmp_path / "full")  # the redone step 3 replaced, not repeated
    for (path, x), (_, y) in zip(final_params(tmp_path / "full"), final_params(tmp_path / "resumed")):
        np.testing.assert_array_equal(y, x, err_msg=jax.tree_util.keystr(path))


def test_resume_refuses_changed_data(tmp_path):
    config = small_config()
    train(config, tmp_path / "run", devices=jax.devices()[:1], stop_at_step=2)
    changed = dataclasses.replace(config, data=dataclasses.replace(config.data, train="synthetic:train:88"))
    with pytest.raises(ValueError, match="data position"):
        train(changed, tmp_path / "run", resume=True, devices=jax.devices()[:1])


def test_best_model_is_the_best_dev_evaluation_and_survives_a_crash(tmp_path, monkeypatch):
    """Dev scores are scripted (0.5, 0.2, 0.7 at steps 2, 4, 6): after step 4 best.json and
    best_model/ still hold step 2; at step 6 the run is killed between writing best_model/ and
    best.json, and `--resume` (nothing left to train) must repair best.json and write the final
    model. Dev evaluation reuses one RelexModel (one compilation per shape), given each step's
    variables. The data record counts the gold spans past max_len=12 that collation drops."""
    import relex_jax.evaluation
    import relex_jax.training.loop as loop
    from relex_jax.checkpoint.convert import load_relex_dir
    from relex_jax.data.collate import spans_outside_grid

    run = tmp_path / "run"
    scores, seen, at_step_6 = iter([0.5, 0.2, 0.7]), [], {}

    def scripted(model, examples, threshold, batch_size):
        seen.append((model, jax.device_get(model.variables["params"])))
        if len(seen) == 3:  # what the run held as best after steps 2 and 4
            at_step_6["best"] = json.loads((run / "best.json").read_text())
            at_step_6["params"] = load_relex_dir(run / "best_model")[1]["params"]
        value = next(scores)
        prf = {"precision": value, "recall": value, "f1": value}
        return {kind: {"strict": prf, "boundaries": prf} for kind in ("entities", "relations")}

    monkeypatch.setattr(relex_jax.evaluation, "evaluate", scripted)
    real_write = loop.write_text_atomically

    def killed_at_step_6(path, text):
        if path.name == "best.json" and json.loads(text)["step"] == 6:
            raise RuntimeError("killed between best_model/ and best.json")
        return real_write(path, text)

    def same(a, b):
        a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        return len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))

    config = small_config(model={**SMALL_RUN["model"], "gliner": {**SMALL_RUN["model"]["gliner"], "max_len": 12}},
                          data={"dev": "synthetic:dev:8"}, eval={"every_n_steps": 2})
    monkeypatch.setattr(loop, "write_text_atomically", killed_at_step_6)
    with pytest.raises(RuntimeError, match="killed between"):
        train(config, run, devices=jax.devices()[:1])
    step2, step4, step6 = (params for _, params in seen)
    assert seen[0][0] is seen[1][0] is seen[2][0]  # one evaluation model, updated
    assert not same(step2, step4) and not same(step4, step6)
    assert at_step_6["best"] == {"step": 2, "metric": "relations.strict.f1", "value": 0.5}
    assert same(at_step_6["params"], step2)  # the worse step 4 did not replace it
    assert json.loads((run / "best.json").read_text())["step"] == 2 and not (run / "model").exists()

    monkeypatch.setattr(loop, "write_text_atomically", real_write)
    summary = train(config, run, resume=True, devices=jax.devices()[:1])
    best = {"step": 6, "metric": "relations.strict.f1", "value": 0.7}
    assert summary["best"] == best
    assert json.loads((run / "best.json").read_text()) == json.loads((run / "best_model" / "best.json").read_text()) == best
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval"]["relations"]["strict"]["f1"]) for r in records if "eval" in r]
    assert evals == [(2, 0.5), (4, 0.2), (6, 0.7)]
    assert same(load_relex_dir(run / "best_model")[1]["params"], step6)
    assert same(load_relex_dir(run / "model")[1]["params"], step6)  # the final model the kill cost

    dropped = len(spans_outside_grid(generate_examples(96, seed=3, split="train"), 4, 12))
    assert dropped > 0 and summary["data"]["long_spans_dropped"] == dropped
    assert [r["data"]["long_spans_dropped"] for r in records if "data" in r] == [dropped, dropped]  # start, resume


def test_long_spans_can_stop_the_run_before_training(tmp_path):
    config = small_config(model={**SMALL_RUN["model"], "gliner": {**SMALL_RUN["model"]["gliner"], "max_width": 2}},
                          data={"on_long_span": "error"})
    with pytest.raises(ValueError, match=r"gold entities .* outside the model's span grid .* the first: example \d+: "
                                         r"entity \(\d+, \d+, '\w+'\) is \d words wide, more than max_width=2"):
        train(config, tmp_path / "run", devices=jax.devices()[:1])
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(ValueError, match="data.on_long_span must be 'drop' or 'error'"):
        small_config(data={"on_long_span": "skip"})


def test_entities_outside_the_text_are_counted_under_on_long_span(tmp_path, caplog):
    """gliner drops gold entities outside the text silently; here they are counted with the long
    spans: `drop` logs them (record, span, reason) and counts them, `error` names the record."""
    import logging

    from relex_jax.data.collate import CollateConfig
    from relex_jax.data.readers import read_gliner_json
    from relex_jax.training.loop import _data_counts

    path = tmp_path / "train.json"
    path.write_text(json.dumps([
        {"tokenized_text": ["Bob", "met", "Ann"], "ner": [[0, 0, "p"], [2, 2, "p"]], "relations": [[0, 1, "met"]]},
        {"tokenized_text": ["Bob", "met", "Ann"], "ner": [[0, 0, "p"], [2, 3, "p"]], "relations": [[0, 1, "met"]]},
    ]))
    examples = read_gliner_json(path)
    config = CollateConfig(max_width=4, max_len=64)
    with caplog.at_level(logging.WARNING, logger="relex_jax.training.loop"):
        counts = _data_counts(examples, [], config, "drop")
    assert counts == {"train_examples": 2, "malformed_skipped": 0, "long_spans_dropped": 1}
    assert f"{path}: record 1: entity (2, 3, 'p') lies outside the text's 3 words" in caplog.text
    assert "1 gold entities (and 1 relations on this host touching them)" in caplog.text
    with pytest.raises(ValueError, match=r"data.on_long_span=error\), the first: .*record 1: entity \(2, 3, 'p'\) "
                                         r"lies outside the text's 3 words"):
        _data_counts(examples, [], config, "error")


def packed_config(**data):
    return small_config(data={"buckets": None, "packing": {}, **data})


def test_packed_stream_takes_every_text_in_order_whole(tmp_path):
    from relex_jax.data.collate import CollateConfig
    from relex_jax.training.init import initial_model
    from relex_jax.training.packing import PackedStream, plan_packing

    config = packed_config()
    examples = generate_examples(40, seed=3, split="train")
    init = initial_model(config.model, jax.random.PRNGKey(0), tmp_path, (ex.tokens for ex in examples))
    collate_config = CollateConfig.from_relex_config(init.config, type_order="sorted")
    buckets = default_buckets(examples, collate_config)
    plan = plan_packing(examples, init.tokenizer, collate_config, 8, buckets, {}, seed=3)
    # one gold-entity size per word size, growing with it, the last holding every text's entities
    classes = set(zip(plan.word_sizes, plan.gold_entities))
    assert len(classes) == len(plan.word_sizes) and list(plan.gold_entities) == sorted(plan.gold_entities)
    assert plan.gold_entities[-1] == max(len(ex.entities) for ex in examples)
    stream = PackedStream(examples, plan, init.tokenizer, collate_config, buckets, seed=3)
    seen: list[int] = []
    for step in range(12):
        batch, epoch, taken, packed = stream.step_batch(step)
        assert 1 <= len(taken) <= plan.max_texts and epoch == min(taken) // len(examples)
        assert batch.input_ids.shape == (plan.rows, plan.tokens_per_row)  # one grid for every step
        # per-text sizes are one of the shape classes, padded from the batch's own sizes: same content
        assert (batch.span_mask.shape[1], batch.entity_index.shape[1]) in classes
        own = stream._collate(taken, step)
        words, gold = own.inputs.span_mask.shape[1], own.entity_mask.shape[1]
        np.testing.assert_array_equal(batch.span_mask[: len(taken), :words], own.inputs.span_mask)
        np.testing.assert_array_equal(batch.entity_index[: len(taken), :gold], own.entity_index)
        np.testing.assert_array_equal(batch.relation_labels[: len(taken), :gold, :gold], own.relation_labels)
        assert not batch.entity_mask[:, gold:].any() and not batch.span_mask[:, words:].any()
        # each text of the step is whole: every word has its tokens in the grid, in one segment of one row
        lengths = [len(stream.example(p).tokens) for p in taken]
        np.testing.assert_array_equal(packed.text_lengths[: len(taken)], lengths)
        real = packed.segment_ids > 0
        for n, length in enumerate(lengths):
            mine = real & (packed.token_texts == n)
            assert len(np.nonzero(mine.any(1))[0]) == 1 and len(np.unique(packed.segment_ids[mine])) == 1
            assert sorted(set(packed.words_mask[mine]) - {0}) == list(range(1, length + 1))
        assert not packed.span_mask[len(taken):].any()
        seen += taken
        # nothing skipped or repeated: the texts taken so far and the ones waiting are exactly the
        # stream positions looked at, and none waits behind more than a step's lookahead
        assert sorted(seen + stream.pending) == list(range(stream.next))
        assert all(p >= stream.next - plan.max_texts - 8 for p in stream.pending)
    assert stream.next > len(examples)  # crossed an epoch boundary
    # a text past an absolute position table (BERT) is an error, not a silently clamped position
    short = PackedStream(examples, plan, init.tokenizer, collate_config, buckets, seed=3, max_positions=10)
    with pytest.raises(ValueError, match="absolute positions"):
        short.step_batch(0)


def test_packed_run_compiles_at_most_three_times_with_little_padding(tmp_path):
    summary = train(packed_config(), tmp_path / "run", devices=jax.devices()[:1])
    assert 1 <= summary["compilations"] <= 3
    assert summary["padded_token_fraction"] <= 0.10
    records = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert all(r["texts"] >= 1 for r in records) and records[-1]["compilations"] == summary["compilations"]


def test_packed_killed_run_resumes_bit_exactly(tmp_path):
    config = packed_config()
    devices = jax.devices()[:2]
    full = train(config, tmp_path / "full", devices=devices)
    train(config, tmp_path / "resumed", devices=devices, stop_at_step=3)
    resumed = train(config, tmp_path / "resumed", resume=True, devices=devices)
    assert resumed["step"] == full["step"] == 6
    assert losses(tmp_path / "resumed") == losses(tmp_path / "full")
    for (path, x), (_, y) in zip(final_params(tmp_path / "full"), final_params(tmp_path / "resumed")):
        np.testing.assert_array_equal(y, x, err_msg=jax.tree_util.keystr(path))
    changed = dataclasses.replace(config, data=dataclasses.replace(config.data, packing={"max_texts": 20}))
    with pytest.raises(ValueError, match="packing"):
        train(changed, tmp_path / "resumed", resume=True, devices=devices)


def test_packing_settings_are_checked():
    with pytest.raises(ValueError, match="data.packing.row_tokens is not a packing setting"):
        packed_config(packing={"row_tokens": 128})
    with pytest.raises(ValueError, match="exclude each other"):
        small_config(data={"packing": {}})
