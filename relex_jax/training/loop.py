"""The training run behind `python -m train` / `relex-jax train`.

    DIR/checkpoints/     Orbax checkpoints (state, rng, data position), every N steps, newest K kept
    DIR/metrics.jsonl    one JSON object per logged step ({"step", "loss", ...}), per evaluation
                         ({"step", "eval"}) and per (re)start ({"step", "data": the data's counts})
    DIR/tokenizer/       the tokenizer (with the prompt tokens) the run trains with
    DIR/best_model/      relex-jax model directory of the best dev evaluation so far (with data.dev),
                         holding its record best.json ({"step", "metric", "value"})
    DIR/best.json        a copy of that record
    DIR/model/           the final relex-jax model directory (`RelexModel.from_pretrained(DIR/model)`)
    DIR/tensorboard/     when tensorboardX (or torch's tensorboard) is installed
    DIR/config.yaml      the resolved config of the run

Steps are micro-steps (one `train_step` call, one global batch); with gradient accumulation the
optimizer steps every `optim.gradient_accumulation_steps` of them, so a run has
`optim.max_steps x gradient_accumulation_steps` micro-steps.

Data order is a pure function of (seed, host, batch number): batch b of a host takes rows of the
epoch permutation `default_rng([seed, host, epoch])` of that host's examples, and its collation
draws from `random.Random` seeded with (seed, host, b). The checkpoint stores b, so `--resume`
continues with exactly the batches an uninterrupted run would have seen. Each epoch's last
`len(examples) % rows` examples (in that epoch's order) wait for a later epoch (a full batch keeps
shapes static); the count is logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import yaml

from relex_jax.data.processor import TRAINING_BUCKETS
from relex_jax.data.readers import read_source
from relex_jax.data.stream import BatchStream
from relex_jax.files import write_text_atomically
from relex_jax.training.config import TrainConfig

log = logging.getLogger(__name__)


def default_buckets(examples: Sequence[Any], collate_config,
                    overrides: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """`TRAINING_BUCKETS` (`relex_jax.data.processor`) plus one size each for the entity and relation label counts: the most a batch
    of these examples can ask for (their fixed label lists, or every type of that kind in the data
    plus explicit negatives and the augmentation's "other" label, capped at `max_types`). Label
    counts are cheap to pad and vary from batch to batch with type sampling and augmentation, so
    one size saves compilations; a batch beyond it (not expected) pads to a multiple of it.
    `overrides` (`data.buckets`) replace these per dimension, so finer token buckets keep the
    fixed label sizes; an empty list keeps a dimension's exact per-batch size."""
    bounds = {}
    for kind, fixed, negatives, extra in (("entities", "ner_labels", "ner_negatives", 1),
                                          ("relations", "rel_labels", "rel_negatives", 0)):
        types = {item[-1] for ex in examples for item in getattr(ex, kind)}
        types.update(t for ex in examples for t in (getattr(ex, negatives) or ()))
        sampled = min(int(collate_config.max_types), len(types) + extra)
        listed = max((len(getattr(ex, fixed)) for ex in examples if getattr(ex, fixed) is not None), default=0)
        bounds[kind] = (max(1, sampled, listed),)
    return {**TRAINING_BUCKETS, **bounds, **{k: tuple(v) for k, v in (overrides or {}).items()}}


# StepBatch fields -> the named dimension of each axis after the rows (for multi-host padding).
_FIELD_DIMS = {
    "input_ids": ("T",), "attention_mask": ("T",), "words_mask": ("T",), "text_lengths": (),
    "span_mask": ("W", "K"), "entity_prompt_index": ("C",), "entity_prompt_mask": ("C",),
    "relation_prompt_index": ("R",), "relation_prompt_mask": ("R",), "entity_labels": ("W", "K", "C"),
    "entity_index": ("E",), "entity_mask": ("E",), "relation_labels": ("E", "E", "R"), "pair_mask": ("E", "E"),
    "adjacency": ("E", "E"),
}


def pad_step_batch(batch, sizes: dict[str, int], pad_id: int):
    """Pad every named dimension of a StepBatch to `sizes` (zeros / False; `pad_id` for token ids):
    the same as collating with larger buckets."""
    changes = {}
    for name, dims in _FIELD_DIMS.items():
        value = getattr(batch, name)
        if value is None:
            continue
        widths = [(0, 0)] + [(0, sizes[d] - n) for d, n in zip(dims, value.shape[1:])]
        fill = pad_id if name == "input_ids" else 0
        changes[name] = np.pad(value, widths, constant_values=fill) if any(w for _, w in widths) else value
    return batch.replace(**changes)


def _dims(batch) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, dims in _FIELD_DIMS.items():
        value = getattr(batch, name)
        if value is not None:
            sizes.update(zip(dims, value.shape[1:]))
    return sizes


def _agree_shapes(batch, pad_id: int):
    """Multi-host: pad every host's rows to the largest shape any host collated this step."""
    if jax.process_count() == 1:
        return batch
    from relex_jax.training.sharding import gather_hosts

    sizes = _dims(batch)
    names = sorted(sizes)
    largest = np.max(gather_hosts(np.asarray([sizes[n] for n in names])), axis=0)
    return pad_step_batch(batch, dict(zip(names, map(int, largest))), pad_id)


def _data_counts(examples: Sequence[Any], errors: list[str], collate_config, on_long_span: str) -> dict[str, int]:
    """The training data's counts over all hosts (metrics.jsonl's "data" record and the run summary):
    examples, malformed records skipped, and gold entities collation drops (`spans_outside_grid`),
    which are logged with the first few or, with `data.on_long_span: error`, stop the run here."""
    from relex_jax.data.collate import spans_outside_grid
    from relex_jax.training.sharding import gather_hosts

    long_spans = spans_outside_grid(examples, collate_config.max_width, collate_config.max_len)
    local = np.asarray([len(examples), len(errors), len(long_spans)])
    total = dict(zip(("train_examples", "malformed_skipped", "long_spans_dropped"),
                     map(int, gather_hosts(local).sum(axis=0))))
    count = total["long_spans_dropped"]
    if not count:
        return total
    lost = sum(span.relations for span in long_spans)
    if on_long_span == "error":
        first = str(long_spans[0]) if long_spans else "(on another host)"
        raise ValueError(
            f"{count} gold entities of the training data lie outside the model's span grid (data.on_long_span=error), "
            f"the first: {first}. Raise the model's max_width / max_len, fix the data, or set data.on_long_span=drop "
            "(gliner's behaviour: such entities and their relations are left out of the targets)"
        )
    if jax.process_index() == 0:
        log.warning("%d gold entities (and %d relations on this host touching them) lie outside the span grid "
                    "(max_width=%d, max_len=%d) and are dropped from the targets, as gliner drops them; first: %s",
                    count, lost, collate_config.max_width, collate_config.max_len,
                    "; ".join(map(str, long_spans[:5])) or "(all on other hosts)")
    return total


def _lookup(report: dict[str, Any], dotted: str) -> float:
    node: Any = report
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"eval.best_metric {dotted!r} is not in the evaluation report")
        node = node[part]
    return float(node)


class _Writers:
    """metrics.jsonl (process 0) and optional TensorBoard."""

    def __init__(self, workdir: Path, resume_step: int, tensorboard: bool):
        self.path = workdir / "metrics.jsonl"
        self.primary = jax.process_index() == 0
        self.board = None
        if not self.primary:
            return
        if self.path.exists():  # drop records past the step we resume from (they are redone)
            keep = [line for line in self.path.read_text().splitlines() if line.strip()
                    and json.loads(line).get("step", 0) <= resume_step]
            write_text_atomically(self.path, "".join(line + "\n" for line in keep))
        if tensorboard:
            self.board = _summary_writer(workdir / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        if not self.primary:
            return
        with self.path.open("a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        if self.board is not None:
            for key, value in _flatten(record).items():
                if key != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _summary_writer(path: Path):
    for module in ("tensorboardX", "torch.utils.tensorboard"):
        try:
            return __import__(module, fromlist=["SummaryWriter"]).SummaryWriter(str(path))
        except ImportError:
            continue
    log.info("TensorBoard logging off: neither tensorboardX nor torch's tensorboard is installed")
    return None


def train(config: TrainConfig, workdir: str | os.PathLike, resume: bool = False, *, devices=None,
          stop_at_step: int | None = None) -> dict[str, Any]:
    """Run (or resume) a training run in `workdir`; returns a summary dict.

    `devices`: the devices of the mesh (default all). `stop_at_step` ends the run right after that
    micro-step without a final checkpoint or model, as if the process were killed there (tests of
    resume, and time-boxed jobs that rely on the periodic checkpoints).
    """
    if config.distributed.initialize:
        from relex_jax.training.sharding import initialize_distributed

        dist = config.distributed
        initialize_distributed(dist.coordinator_address, dist.num_processes, dist.process_id)

    from relex_jax.training.checkpoints import TrainCheckpoints
    from relex_jax.training.sharding import batch_rows_multiple, make_mesh

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = jax.process_count()
    mesh = make_mesh(config.mesh, devices)
    rows_multiple = batch_rows_multiple(mesh)
    if config.data.batch_size % rows_multiple or config.data.batch_size % hosts:
        raise ValueError(
            f"data.batch_size={config.data.batch_size} must be a multiple of the data x fsdp devices ({rows_multiple}) "
            f"and of the host count ({hosts})"
        )

    checkpoints = TrainCheckpoints(workdir, every_n_steps=config.checkpoint.every_n_steps, keep=config.checkpoint.keep,
                                   async_save=config.checkpoint.async_save, config=config.to_dict())
    latest = checkpoints.latest_step()
    if latest is not None and not resume:
        checkpoints.close()
        raise FileExistsError(f"{workdir} already holds checkpoints (latest step {latest}): pass --resume to "
                              "continue that run, or choose a new --workdir")

    try:
        return _run(config, workdir, checkpoints, latest, mesh, stop_at_step)
    finally:
        checkpoints.close()  # also when setup fails: no Orbax thread outlives the run


def _run(config: TrainConfig, workdir: Path, checkpoints, latest: int | None, mesh, stop_at_step: int | None):
    """The body of `train` once the run directory and its checkpoints are settled."""
    from relex_jax.checkpoint.convert import save_relex_dir
    from relex_jax.data.collate import CollateConfig, collate
    from relex_jax.inference import RelexModel
    from relex_jax.modeling.relex import RelexModule
    from relex_jax.training.init import initial_model
    from relex_jax.training.losses import LossConfig
    from relex_jax.training.optim import make_optimizer
    from relex_jax.training.sharding import batch_rows_multiple as rows_multiple
    from relex_jax.training.sharding import batch_sharding, gather_hosts, global_batch, replicated, train_state_shardings
    from relex_jax.training.step import StepBatch, create_train_state, make_train_step, training_module

    primary = jax.process_index() == 0
    host, hosts = jax.process_index(), jax.process_count()
    errors: list[str] = []
    train_examples = read_source(config.data.train, config.seed, config.data.on_error, (host, hosts), errors)
    dev_examples = None  # read and evaluated on process 0 only
    if config.data.dev and primary:
        dev_examples = read_source(config.data.dev, config.seed, config.data.on_error, (0, 1))
        if config.eval.max_examples:
            dev_examples = dev_examples[: config.eval.max_examples]
    if primary:
        log.info("%d training examples on this host (%d hosts)%s", len(train_examples), hosts,
                 f", {len(errors)} malformed skipped" if errors else "")

    init = initial_model(config.model, jax.random.PRNGKey(config.seed), workdir,
                         (ex.tokens for ex in train_examples), shapes_only=latest is not None)
    relex_config = init.config
    collate_config = CollateConfig.from_relex_config(relex_config, **config.data.collate)
    data_counts = _data_counts(train_examples, errors, collate_config, config.data.on_long_span)
    loss_config = LossConfig.from_relex_config(relex_config, **config.loss)
    optim = config.optim
    optimizer = make_optimizer(optim)
    module = training_module(relex_config, optim, remat=config.train.remat)
    buckets = default_buckets(train_examples, collate_config, config.data.buckets)
    pad_id = relex_config.encoder.pad_token_id

    params_host = init.variables["params"]
    batch_stats_host = init.variables.get("batch_stats", {})
    abstract = jax.eval_shape(lambda p, s: create_train_state({"params": p, "batch_stats": s}, optimizer),
                              params_host, batch_stats_host)
    state_sharding = train_state_shardings(abstract, mesh)
    rng = jax.random.key(config.seed)
    if config.data.packing is not None:
        from relex_jax.data.packing import check_packable
        from relex_jax.training.packing import PackedStream, plan_packing

        check_packable(relex_config)
        if hosts > 1:
            raise ValueError("data.packing is single-host for now (each host's stream position would differ); "
                             "train multi-host without it")
        plan = plan_packing(train_examples, init.tokenizer, collate_config, config.data.batch_size, buckets,
                            config.data.packing, config.seed, rows_multiple(mesh))
        encoder = relex_config.encoder
        stream = PackedStream(train_examples, plan, init.tokenizer, collate_config, buckets, config.seed, host,
                              encoder.max_position_embeddings if encoder.position_biased_input else None)
        if primary:
            log.info("packing: %d rows x %d tokens, up to %d texts per step, shape classes (words, gold entities) %s",
                     plan.rows, plan.tokens_per_row, plan.max_texts, list(zip(plan.word_sizes, plan.gold_entities)))
    else:
        stream = BatchStream(train_examples, config.data.batch_size // hosts, config.seed, host)
    if latest is not None:
        target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                        abstract, state_sharding)
        state, rng, data_state = checkpoints.restore(target=target)
        batch_number = stream.check_position(data_state)
        log.info("resumed from step %d (%s)", latest, checkpoints.step_dir(latest))
    else:
        init_state = jax.jit(lambda p, s: create_train_state({"params": p, "batch_stats": s}, optimizer),
                             out_shardings=state_sharding)
        state = init_state(params_host, batch_stats_host)
        batch_number = 0
    del params_host, batch_stats_host
    start_step = int(jax.device_get(state.step))

    train_step = make_train_step(
        module, loss_config, optim, optimizer=optimizer, dropout=config.train.dropout,
        in_shardings=(state_sharding, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
    )

    total_steps = optim.max_steps * optim.gradient_accumulation_steps
    writers = _Writers(workdir, start_step, config.train.tensorboard)
    if primary:
        (workdir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        log.info("mesh %s over %d devices; %d micro-steps (%d optimizer steps), global batch %d",
                 dict(mesh.shape), mesh.size, total_steps, optim.max_steps, config.data.batch_size)
        dropped = 0 if config.data.packing is not None else len(train_examples) % stream.rows
        if dropped:
            log.info("each epoch defers %d of %d examples to a later epoch (full batches only)", dropped,
                     len(train_examples))
    writers.write({"step": start_step, "data": data_counts})

    def host_variables() -> dict[str, Any]:
        """The current variables as numpy arrays on every process (gathered across hosts)."""
        variables = {"params": gather_hosts(state.params, tiled=True)}
        if state.batch_stats:
            variables["batch_stats"] = gather_hosts(state.batch_stats, tiled=True)
        return variables

    def save_final_model() -> None:
        variables = host_variables()
        if primary:
            save_relex_dir(workdir / "model", relex_config, variables, init.tokenizer_dir, overwrite=True)
            log.info("final model written to %s", workdir / "model")

    best = _read_best(workdir, primary)
    if start_step >= total_steps:
        log.info("the run in %s already finished at step %d; nothing to train", workdir, start_step)
        if not (workdir / "model").is_dir():  # killed after the last checkpoint, before the final model
            save_final_model()
        writers.close()
        return {"step": start_step, "first_loss": None, "last_loss": None, "eval": None, "best": best,
                "model_dir": str(workdir / "model"), "data": data_counts}

    eval_model = None  # built at the first evaluation, then given each evaluation's variables

    def evaluate(step: int) -> dict[str, Any] | None:
        nonlocal best, eval_model
        if not config.data.dev:
            return None
        from relex_jax.evaluation import evaluate as evaluate_examples

        variables = host_variables()
        if not primary:
            return None
        if eval_model is None:
            eval_model = RelexModel(relex_config, RelexModule(relex_config), variables, init.tokenizer,
                                    init.tokenizer_dir, devices=jax.local_devices())
        else:  # same model object, same jitted stages: dev evaluation compiles once per shape per run
            eval_model.set_variables(variables)
        report = evaluate_examples(eval_model, dev_examples, threshold=config.eval.threshold,
                                   batch_size=config.eval.batch_size)
        value = _lookup(report, config.eval.best_metric)
        writers.write({"step": step, "eval": report})
        if best is None or value > best["value"]:
            best = {"step": step, "metric": config.eval.best_metric, "value": value}
            record = json.dumps(best, indent=2)
            # The record goes into best_model/ with the model (one atomic directory swap), then to the
            # top-level copy; a crash between the two leaves a stale copy that `_read_best` repairs.
            save_relex_dir(workdir / "best_model", relex_config, variables, init.tokenizer_dir, overwrite=True,
                           extra_files={BEST_RECORD: record})
            write_text_atomically(workdir / BEST_RECORD, record)
        log.info("step %d: dev %s = %.4f (best %.4f at step %d)", step, config.eval.best_metric, value,
                 best["value"], best["step"])
        return report

    progress = None
    if primary and config.train.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, desc="train")
    window: list[dict[str, Any]] = []
    shapes = _StepShapes()
    window_start = time.perf_counter()
    first_loss = last_loss = None
    step = start_step
    try:
        while step < total_steps:
            if config.data.packing is not None:
                local, epoch, taken, _ = stream.step_batch(batch_number)
                texts = len(taken)
                real_tokens = int((local.segment_ids > 0).sum())
            else:
                examples, collate_rng, epoch = stream.batch(batch_number)
                collated = collate(examples, init.tokenizer, collate_config, collate_rng, buckets=buckets)
                local = _agree_shapes(StepBatch.from_training_batch(collated), pad_id)
                texts, real_tokens = len(examples), int(local.attention_mask.sum())
            shapes.note(local, real_tokens)
            state, metrics = train_step(state, global_batch(local, mesh), rng)
            metrics = dict(metrics, texts=texts)
            batch_number += 1
            step += 1
            window.append(metrics)
            if progress is not None:
                progress.update(1)
            if step % config.train.log_every_n_steps == 0 or step == total_steps:
                fetched = jax.device_get(window)
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "epoch": epoch}
                for key in fetched[-1].keys() - {"texts"}:
                    values = [float(m[key]) for m in fetched]
                    record[key] = values[-1] if key in ("learning_rate", "others_lr") else sum(values) / len(values)
                record["texts"] = sum(int(m["texts"]) for m in fetched)
                record["examples_per_second"] = record["texts"] / max(elapsed, 1e-9)
                record.update(shapes.summary())
                writers.write(record)
                first_loss = record["loss"] if first_loss is None else first_loss
                last_loss = record["loss"]
                if progress is not None:
                    progress.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['learning_rate']:.2e}",
                                         ex_s=f"{record['examples_per_second']:.1f}")
                window, window_start = [], time.perf_counter()
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss became {record['loss']} at step {step}; the last checkpoint "
                                             "before it is intact (lower the learning rate and --resume)")
            checkpoints.maybe_save(step, state, rng, stream.position(batch_number))
            if step == stop_at_step:
                return {"stopped_at": step, "first_loss": first_loss, "last_loss": last_loss, "data": data_counts,
                        **shapes.summary()}
            if config.data.dev and step % config.eval.every_n_steps == 0 and step < total_steps:
                evaluate(step)
        checkpoints.maybe_save(step, state, rng, stream.position(batch_number), force=True)
        report = evaluate(step)
        save_final_model()
        return {"step": step, "first_loss": first_loss, "last_loss": last_loss, "eval": report, "best": best,
                "model_dir": str(workdir / "model"), "data": data_counts, **shapes.summary()}
    finally:
        if progress is not None:
            progress.close()
        writers.close()


class _StepShapes:
    """Counts the train step's compilations (one per distinct batch shape this process feeds it)
    and the padded share of the encoder's token grid, for the logs and the run summary."""

    def __init__(self):
        self.seen: set = set()
        self.real_tokens = self.grid_tokens = 0

    def note(self, batch, real_tokens: int) -> None:
        signature = tuple((f.name, getattr(batch, f.name).shape) for f in dataclasses.fields(batch)
                          if getattr(batch, f.name) is not None)
        if signature not in self.seen:
            self.seen.add(signature)
            log.info("train step compiles for new batch shapes (%d so far): %s", len(self.seen),
                     {name: shape for name, shape in signature})
        self.real_tokens += real_tokens
        self.grid_tokens += batch.input_ids.size

    def summary(self) -> dict[str, Any]:
        padded = 1.0 - self.real_tokens / self.grid_tokens if self.grid_tokens else 0.0
        return {"compilations": len(self.seen), "padded_token_fraction": round(padded, 6)}


BEST_RECORD = "best.json"  # DIR/best.json and DIR/best_model/best.json: {"step", "metric", "value"}


def _read_best(workdir: Path, primary: bool = True) -> dict[str, Any] | None:
    """The best dev evaluation so far: DIR/best_model/best.json, written inside the model directory
    (so it always describes the model there); DIR/best.json is its copy, rewritten here when a crash
    fell between the two writes. A best record past the checkpoint a run resumes from stays: the
    resumed run redoes those steps bit for bit, so it meets the same evaluation again."""
    top, inside = workdir / BEST_RECORD, workdir / "best_model" / BEST_RECORD
    if inside.is_file():
        best = json.loads(inside.read_text())
        if primary and (not top.is_file() or json.loads(top.read_text()) != best):
            log.warning("%s did not match %s (a crash between the two writes): rewritten", top, inside)
            write_text_atomically(top, json.dumps(best, indent=2))
        return best
    if top.is_file() and (workdir / "best_model").is_dir():  # a run directory of an older relex-jax
        return json.loads(top.read_text())
    if top.is_file():
        log.warning("%s has no model directory %s beside it: ignored", top, workdir / "best_model")
    return None
