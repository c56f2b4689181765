"""The `relex-jax` command line.

Subcommands so far:
  selfcheck   build the embedded tiny DeBERTa-v3-shaped encoder (no network, no GPU), run it
              jitted as a plain, rematerialised and scanned stack on a ragged batch, and check
              that the variants agree and that padding does not leak into real tokens.
  convert     gliner checkpoint (directory or hub id) -> relex-jax model directory, or back
              with --to-gliner
  predict     entities and relations for every record of a corpus (.txt, .jsonl, .jsonl.gz, .parquet,
              hf:NAME[:SPLIT]), committed in pieces (resumable after a kill, shardable over hosts),
              into a .jsonl / .parquet file or a run directory (`relex_jax.corpus_inference`)
  export      a model's two inference stages as StableHLO programs or ONNX graphs with symbolic shapes (`relex_jax.export`)
  merge       a finished run directory -> one .jsonl / .parquet file in input order
  train       train or fine-tune from a YAML config (`configs/`), resumable (same as `python -m train`)
  evaluate    entity and relation precision / recall / F1 (micro; strict and boundaries-only; per type)
              of a model on annotated data (gliner JSON or ../shared/data JSONL), on the data's own tokens;
              --protocol joint / given-entities / document (`relex_jax.protocols`)
  serve       an HTTP JSON API over `inference` (POST /v1/extract, GET /health, GET /metrics) with dynamic
              batching and a warm-up of the shape buckets (needs the serve extra: starlette, uvicorn)
  quickstart  the main job: train a small model on the embedded synthetic corpus (no network, no GPU, a few
              minutes on 2 CPU cores), reload it, show extractions, report held-out precision / recall / F1
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

EMBEDDED_CONFIG = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512)


def selfcheck(args: argparse.Namespace) -> int:
    import flax.linen as nn
    import jax

    from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION, DebertaConfig, DebertaV2Model, stack_layer_params

    config = DebertaConfig(**EMBEDDED_CONFIG, **DEBERTA_V3_ATTENTION)
    rng = np.random.default_rng(args.seed)
    lengths = sorted(rng.integers(1, args.seq_len + 1, size=args.batch).tolist(), reverse=True)
    lengths[0] = args.seq_len
    mask = (np.arange(args.seq_len)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(1, config.vocab_size, size=mask.shape).astype(np.int32) * mask
    print(f"relex-jax selfcheck on {jax.devices()[0].platform}: {config.num_hidden_layers}-layer DeBERTa-v3-shaped "
          f"encoder (hidden {config.hidden_size}), batch {args.batch} x {args.seq_len} tokens, row lengths {lengths}")

    plain = DebertaV2Model(config)
    params = nn.meta.unbox(plain.init(jax.random.PRNGKey(args.seed), ids[:1], mask[:1])["params"])
    variants = {
        "plain": (plain, params),
        "remat": (plain.clone(remat=True), params),
        "scan": (plain.clone(scan_layers=True), stack_layer_params(params, config)),
    }
    outputs, failures = {}, []
    for name, (module, variant_params) in variants.items():
        forward = jax.jit(module.apply)
        start = time.perf_counter()
        out = forward({"params": variant_params}, ids, mask).block_until_ready()
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        forward({"params": variant_params}, ids, mask).block_until_ready()
        print(f"  {name:6s} compile+run {compiled:6.2f} s   run {1e3 * (time.perf_counter() - start):7.1f} ms")
        outputs[name] = np.asarray(out)

    scale = np.abs(outputs["plain"]).max()
    for name in ("remat", "scan"):
        diff = np.abs(outputs[name] - outputs["plain"]).max() / scale
        print(f"  {name} vs plain: max relative difference {diff:.1e}")
        if not diff <= 1e-5:
            failures.append(f"{name} differs from the plain stack by {diff:.1e}")
    forward = jax.jit(plain.apply)
    for row, length in enumerate(lengths):
        alone = np.asarray(forward({"params": params}, ids[row : row + 1, :length], mask[row : row + 1, :length]))
        diff = np.abs(alone[0] - outputs["plain"][row, :length]).max() / scale
        if not diff <= 1e-5:
            failures.append(f"row {row}: padding changes real-token outputs by {diff:.1e}")
    print(f"  padding invariance checked on {len(lengths)} rows")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("selfcheck: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


def convert(args: argparse.Namespace) -> int:
    import logging
    import time

    from relex_jax.checkpoint.convert import gliner_to_relex, relex_to_gliner

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.to_gliner:
        out = relex_to_gliner(args.src, args.out, overwrite=args.overwrite)
        kind = "gliner checkpoint (load with gliner.GLiNER.from_pretrained)"
    else:
        out = gliner_to_relex(args.src, args.out, overwrite=args.overwrite)
        kind = "relex-jax model directory (load with relex_jax.RelexModel.from_pretrained)"
    print(f"wrote {kind}: {out} in {time.perf_counter() - start:.1f} s")
    return 0


def export(args: argparse.Namespace) -> int:
    """Export a model's inference stages (`relex_jax.export`); a bad model, output or format is
    one line on stderr and exit status 2."""
    from relex_jax.export import FORMATS, export_model

    if args.format not in FORMATS:
        print(f"relex-jax export: error: unsupported format {args.format!r}; supported: {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        out = export_model(args.model, args.out, format=args.format, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"relex-jax export: error: {exc}", file=sys.stderr)
        return 2
    loader = "relex_jax.export.load_stablehlo" if args.format == "stablehlo" else "onnxruntime"
    print(f"wrote {args.format} export: {out} in {time.perf_counter() - start:.1f} s (load with {loader})")
    return 0


class UsageError(Exception):
    """A problem with a command's arguments or input, reported as one line and exit status 2."""


def _parse_types(value: str, option: str):
    """`a,b` -> ["a", "b"]; `{"a": "description", ...}` -> that mapping. An empty or repeated
    name is an error rather than a type silently dropped (gliner would drop repeats)."""
    import json

    if value.lstrip().startswith("{"):
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{option}: not a valid JSON object ({exc})") from None
        if not isinstance(mapping, dict):
            raise UsageError(f"{option}: expected a JSON object {{name: description}}")
        return mapping
    names = [item.strip() for item in value.split(",")]
    for i, name in enumerate(names):
        if not name:
            raise UsageError(f"{option}: item {i + 1} of {value!r} is empty; "
                                "give comma-separated names such as 'a,b'")
        if name in names[:i]:
            raise UsageError(f"{option}: {name!r} is listed twice")
    return names


def inference_settings(args: argparse.Namespace):
    """The `InferenceSettings` of `predict` / `evaluate` options, checked before any model loads."""
    from relex_jax.settings import InferenceSettings

    try:
        return InferenceSettings(
            threshold=args.threshold, adjacency_threshold=args.adjacency_threshold,
            relation_threshold=args.relation_threshold, flat_ner=not args.nested, multi_label=args.multi_label,
            batch_size=args.batch_size, long_texts=args.long_texts, window_size=args.window_size,
            window_stride=args.window_stride, packing=False if args.packing is None else args.packing,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def predict(args: argparse.Namespace) -> int:
    """Run a corpus through `RelexModel.inference` into committed pieces, resumably (see
    `relex_jax.corpus_inference`); a bad option, input or run directory is one line on stderr
    and exit status 2."""
    try:
        return _predict(args)
    except UsageError as exc:
        print(f"relex-jax predict: error: {exc}", file=sys.stderr)
        return 2


OUTPUT_FILES = (".jsonl", ".parquet")


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from relex_jax.corpus_inference import (
        RunDirectory,
        RunError,
        clear_run,
        current_shard,
        make_manifest,
        merge_run,
        model_identity,
        parse_shard,
        predict_corpus,
    )
    from relex_jax.data.corpus import CorpusError, open_corpus
    from relex_jax.data.labels import normalize_labels

    labels = _parse_types(args.labels, "--labels")
    relations = None if args.relations is None else _parse_types(args.relations, "--relations")
    for option, value, required in (("--labels", labels, True), ("--relations", relations, False)):
        try:
            normalize_labels(value, 1, option, required=required)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    settings = inference_settings(args)
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be positive, got {args.chunk_size}")
    keys = (args.entities_key, args.relations_key)
    if len(set(keys)) < 2 or args.text_column in keys or not all(keys):
        raise UsageError(f"--entities-key and --relations-key must be two different non-empty names other than "
                         f"{args.text_column!r} (the text field), got {keys}")
    if args.shard and args.distributed:
        raise UsageError("--shard and --distributed exclude each other (under jax.distributed each process takes "
                         "its share by its process index)")
    try:
        shard = parse_shard(args.shard) if args.shard else (0, 1)
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None

    # --output FILE.jsonl / FILE.parquet: pieces in FILE.pieces/ beside it, merged into FILE at the
    # end; any other name is the run directory itself (for shards on several hosts, merged later).
    out = Path(args.output)
    merged = out.suffix in OUTPUT_FILES
    piece_format = args.format or (out.suffix[1:] if merged else "jsonl")
    if merged and piece_format != out.suffix[1:]:
        raise UsageError(f"--format {args.format} does not match --output {out}")
    run_dir = out.with_name(out.name + ".pieces") if merged else out
    several = args.distributed or shard[1] > 1
    if merged:
        if out.is_dir():
            raise UsageError(f"--output {out} is a directory")
        if out.exists() and not args.overwrite:
            raise UsageError(f"--output {out} exists; pass --overwrite to replace it")
        if args.shard:
            raise UsageError(f"--shard: each process writes its pieces into one run directory; give --output DIR "
                             f"(no {'/'.join(OUTPUT_FILES)} suffix) and merge it with `relex-jax merge DIR "
                             f"{out.name}` once every shard has finished")
    if not run_dir.parent.is_dir():
        raise UsageError(f"--output {out}: directory {run_dir.parent} does not exist")
    if args.overwrite and several:
        raise UsageError("--overwrite with several processes would let one remove the others' pieces; remove the "
                         "run directory before starting them")

    try:
        corpus = open_corpus(args.input, args.text_column, keys)
    except CorpusError as exc:
        raise UsageError(f"--input {exc}") from None
    try:
        corpus.count()  # line files: a bad record fails now, before the model loads
        manifest = dict(corpus=corpus, labels=labels, relations=relations, settings=settings,
                        entities_key=args.entities_key, relations_key=args.relations_key,
                        chunk_size=args.chunk_size, piece_format=piece_format)
        run = RunDirectory(run_dir)
        if args.overwrite:
            clear_run(run_dir)
        else:
            run.check(make_manifest(model=None, **manifest))  # a different run is refused before the model loads
    except (CorpusError, RunError) as exc:
        raise UsageError(str(exc)) from None

    if args.distributed:
        from relex_jax.training.sharding import initialize_distributed

        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
        shard = current_shard()
    from relex_jax.compilation_cache import enable_compilation_cache
    from relex_jax.inference import RelexModel

    enable_compilation_cache(args.compilation_cache)
    start = time.perf_counter()
    model = RelexModel.from_pretrained(args.model)
    loaded = time.perf_counter() - start
    try:
        model.check_settings(settings)
    except ValueError as exc:
        raise UsageError(f"{args.model}: {exc}") from None
    try:
        run.start(make_manifest(model=model_identity(model.model_dir), **manifest), shard)
        done = predict_corpus(model, corpus, run, labels, relations, settings, shard=shard)
    except (CorpusError, RunError) as exc:
        raise UsageError(str(exc)) from None
    where = f"{run_dir} (shard {shard[0]}/{shard[1]})" if several else str(run_dir)
    if merged:
        if args.distributed:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("relex-jax predict: every shard's pieces are written")
        if shard[0] == 0:
            merge_run(run_dir, out, overwrite=True)
            clear_run(run_dir)
            where = str(out)
    resumed = f"; {done['pieces_before']} pieces were already done" if done["pieces_before"] else ""
    print(f"wrote {where}: {done['texts']} texts in {done['pieces']} pieces, {done['entities']} entities, "
          f"{done['relations']} relations in {done['seconds']:.1f} s "
          f"({done['texts'] / max(done['seconds'], 1e-9):.1f} texts/s; model loaded in {loaded:.1f} s; "
          f"{len(model.compiled_shapes)} compiled shapes{resumed})", file=sys.stderr)
    return 0


def merge(args: argparse.Namespace) -> int:
    from relex_jax.corpus_inference import RunError, merge_run

    try:
        count = merge_run(args.run, args.output, overwrite=args.overwrite)
    except RunError as exc:
        print(f"relex-jax merge: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {count} records of {args.run}, in input order", file=sys.stderr)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Serve a model over HTTP (`relex_jax.serve`): options are checked before the model loads,
    settings against the model before the server starts."""
    import logging

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    try:
        import uvicorn

        from relex_jax.serve.app import create_app
        from relex_jax.serve.schema import ServeConfig
    except ImportError as exc:
        print(f"relex-jax serve: error: {exc.name} is missing; install the serve extra: "
              "pip install 'relex-jax[serve]'", file=sys.stderr)
        return 2
    try:
        config = ServeConfig(
            defaults=inference_settings(args),
            labels=None if args.labels is None else _parse_types(args.labels, "--labels"),
            relations=None if args.relations is None else _parse_types(args.relations, "--relations"),
            max_body_bytes=args.max_body_bytes, max_texts=args.max_texts, max_labels=args.max_labels,
            max_words=args.max_words, max_batch_texts=args.max_batch_texts, max_wait_ms=args.max_wait_ms,
            warmup_words=args.warmup_words,
        )
    except (UsageError, TypeError, ValueError) as exc:
        print(f"relex-jax serve: error: {exc}", file=sys.stderr)
        return 2

    from relex_jax.compilation_cache import enable_compilation_cache
    from relex_jax.inference import RelexModel

    enable_compilation_cache(args.compilation_cache)
    model = RelexModel.from_pretrained(args.model)
    try:
        model.check_settings(config.defaults)
    except ValueError as exc:
        print(f"relex-jax serve: error: {args.model}: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(model, config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def train(args: argparse.Namespace) -> int:
    import logging

    from relex_jax.training.config import load_config

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing (no TPU, no GPU) at INFO
    try:
        config = load_config(args.config, args.overrides)
    except (OSError, ValueError) as err:
        print(f"relex-jax train: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from relex_jax.compilation_cache import enable_compilation_cache
    from relex_jax.training.loop import train as run

    enable_compilation_cache(args.compilation_cache)
    try:
        summary = run(config, args.workdir, resume=args.resume)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"relex-jax train: {err}", file=sys.stderr)
        return 2
    if summary["last_loss"] is None:
        print(f"nothing to train: the run already reached step {summary['step']}; model in {summary['model_dir']}",
              file=sys.stderr)
    else:
        print(f"trained to step {summary['step']}: loss {summary['first_loss']:.4g} (first logged) -> "
              f"{summary['last_loss']:.4g} (last); model in {summary['model_dir']}", file=sys.stderr)
    return 0


def quickstart(args: argparse.Namespace) -> int:
    from relex_jax.quickstart import main as run_quickstart

    return run_quickstart(args)


def evaluate(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from relex_jax.data.readers import MalformedRecord, read_examples
    from relex_jax.evaluation import evaluate as run_evaluation

    try:
        settings = inference_settings(args)
        labels = None if args.labels is None else _parse_types(args.labels, "--labels")
        relations = None if args.relations is None else _parse_types(args.relations, "--relations")
        data = str(args.data)
        if not data.startswith("hf:") and not Path(data).is_file():
            raise UsageError(f"--data {data}: no such file")
        options = _protocol_options(args)
        if args.protocol != "joint" or options:
            return _evaluate_protocol(args, settings, labels, relations, data, options)
        examples = read_examples(data, args.on_error)
        if not examples:
            raise UsageError(f"--data {data}: no examples")
    except (UsageError, MalformedRecord, ValueError) as exc:
        print(f"relex-jax evaluate: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output or f"eval_{Path(data.split(':')[-1]).stem or 'data'}.json")
    return _run_evaluation(
        args, settings, data, out, f"{len(examples)} texts of {data}",
        lambda model: run_evaluation(model, examples, labels, relations, **dataclasses.asdict(settings)),
        format_report)


def _run_evaluation(args: argparse.Namespace, settings, data: str, out, what: str, score, summary) -> int:
    """The model half of `evaluate` (arguments and data already checked): load the model, check
    the settings against it, `score(model)` -> report, written to `out` and summarised (`summary`)."""
    import json

    from relex_jax.compilation_cache import enable_compilation_cache
    from relex_jax.files import write_text_atomically
    from relex_jax.inference import RelexModel

    enable_compilation_cache(args.compilation_cache)
    model = RelexModel.from_pretrained(args.model)
    print(f"evaluating {args.model} on {what}", file=sys.stderr)
    try:
        model.check_settings(settings)
        report = score(model)
    except (TypeError, ValueError) as exc:  # settings the model cannot run, label sets, a text it cannot take
        print(f"relex-jax evaluate: error: {exc}", file=sys.stderr)
        return 2
    report = {"model": str(args.model), "data": data, **report}
    write_text_atomically(out, json.dumps(report, indent=2))
    print(summary(report))
    print(f"report written to {out}", file=sys.stderr)
    return 0


def _protocol_options(args: argparse.Namespace) -> dict:
    """The protocol options given on the command line (option name -> value)."""
    given = dict(group_by=args.group_by, offered=args.offered, draws=args.draws, seed=args.seed,
                 per_label=args.per_label, given_entities=args.given_entities or None, label_group=args.label_group)
    return {name: value for name, value in given.items() if value is not None}


def _evaluate_protocol(args: argparse.Namespace, settings, labels, relations, data: str, options: dict) -> int:
    """`evaluate --protocol` (or joint with --group-by): JSON Lines records, the protocol planned
    (data and options checked) before the model loads; problems are one line and exit status 2."""
    import dataclasses
    import re
    from pathlib import Path

    from relex_jax.protocols import PROTOCOL_OPTIONS, PROTOCOLS, plan, read_records, run

    if args.protocol not in PROTOCOLS:
        raise UsageError(f"--protocol: unknown protocol {args.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if Path(data).suffix != ".jsonl":
        raise UsageError(f"--protocol {args.protocol}: --data must be a ../shared/data-style .jsonl file, got {data}")
    if args.on_error != "raise":
        raise UsageError(f"--protocol {args.protocol} reads every record strictly: --on-error {args.on_error} is "
                         "not supported with it")
    try:
        planned = plan(args.protocol, read_records(data), labels, relations, **options)
    except ValueError as exc:  # MalformedRecord included; option names as the command line spells them
        names = "|".join(name for names in PROTOCOL_OPTIONS.values() for name in names)
        raise UsageError(re.sub(rf"\b({names})\b", lambda m: "--" + m.group(1).replace("_", "-"), str(exc))) from None
    out = Path(args.output or f"eval_{Path(data).stem}_{args.protocol}.json")
    return _run_evaluation(args, settings, data, out,
                           f"{len(planned.examples)} records of {data} (protocol {args.protocol})",
                           lambda model: run(model, planned, **dataclasses.asdict(settings)), format_protocol_report)


def format_protocol_report(report: dict) -> str:
    """The headline numbers of a protocol report (`relex_jax.protocols.run`) as text."""
    if report["protocol"] == "joint":
        lines = [format_report(report)]
        for value, scores in report.get("groups", {}).items():
            lines.append(f"{report['group_by']}={value} ({scores['texts']} texts): entities strict F1 "
                         f"{scores['entities']['strict']['f1']:.4f}, relations strict F1 "
                         f"{scores['relations']['strict']['f1']:.4f}")
        return "\n".join(lines)
    if report["protocol"] == "document":
        ents, rels = report["entities"], report["relations"]["micro"]
        return "\n".join([
            f"{report['documents']} documents, {len(report['label_groups'])} relation label group(s), "
            f"given entities: {report['given_entities']}",
            f"mention entities strict P/R/F1 {ents['strict']['precision']:.4f} {ents['strict']['recall']:.4f} "
            f"{ents['strict']['f1']:.4f}, boundaries F1 {ents['boundaries']['f1']:.4f}",
            f"cluster relations P/R/F1 {rels['precision']:.4f} {rels['recall']:.4f} {rels['f1']:.4f}",
        ])
    lines = [f"{'m':>3s} {'draws':>5s} {'accuracy':>15s} {'macro F1':>15s} {'micro F1':>8s} {'extract F1':>10s} "
             f"{'random':>7s} {'frequent acc/macro F1':>21s}"]
    for size in report["offered_sizes"]:
        mean, sd = size["mean"], size["sd"]
        if mean["accuracy"] is None:
            lines.append(f"{size['m']:3d} {size['draws_with_pairs']:5d}  (no evaluated pairs)")
            continue
        lines.append(f"{size['m']:3d} {size['draws_with_pairs']:5d} {mean['accuracy']:7.4f} ± {sd['accuracy']:.3f} "
                     f"{mean['macro_f1']:7.4f} ± {sd['macro_f1']:.3f} {mean['micro_f1']:8.4f} "
                     f"{mean['extraction_f1']:10.4f} {mean['random_accuracy']:7.4f} "
                     f"{mean['most_frequent_accuracy']:10.4f}/{mean['most_frequent_macro_f1']:.4f}")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The headline numbers of an evaluation report as a small text table."""
    lines = [f"{'':24s} {'precision':>9s} {'recall':>9s} {'F1':>9s}"]
    for kind in ("entities", "relations"):
        for mode in ("strict", "boundaries"):
            m = report[kind][mode]
            lines.append(f"{kind + ' ' + mode:24s} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f}")
    for kind, singular in (("entities", "entity"), ("relations", "relation")):
        for name, m in report[kind]["per_type"].items():
            lines.append(f"  {singular:8s} {name:13.13s} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f}")
    lines.append(f"{report['texts']} texts in {report['seconds']:.1f} s ({report['texts_per_second']:.1f} texts/s)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relex-jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("selfcheck", help="run the embedded tiny encoder and check its variants agree")
    check.add_argument("--batch", type=int, default=4, help="rows in the ragged batch (default 4)")
    check.add_argument("--seq-len", type=int, default=64, help="padded sequence length (default 64)")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=selfcheck)
    conv = sub.add_parser("convert", help="convert a gliner checkpoint to a relex-jax model directory, or back")
    conv.add_argument("src", help="gliner directory or hub id (or, with --to-gliner, a relex-jax directory)")
    conv.add_argument("out", help="output directory (written atomically)")
    conv.add_argument("--to-gliner", action="store_true", help="convert a relex-jax directory back to gliner")
    conv.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    conv.set_defaults(func=convert)
    exp = sub.add_parser("export", help="export a model's inference stages (StableHLO or ONNX, symbolic shapes)")
    exp.add_argument("model", help="relex-jax model directory, gliner directory or hub id")
    exp.add_argument("out", help="output directory (written atomically)")
    exp.add_argument("--format", default="stablehlo", help="artefact format: stablehlo (default, needs JAX to run) or onnx "
                     "(needs jax2onnx to export, onnxruntime to run)")
    exp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    exp.set_defaults(func=export)
    pred = sub.add_parser("predict", help="extract entities and relations from a corpus, resumably, in pieces")
    pred.add_argument("--model", required=True, help="relex-jax model directory, gliner directory or hub id")
    pred.add_argument("--labels", required=True,
                      help='entity types, comma-separated ("person,organization"), or a JSON object '
                           '\'{"name": "description", ...}\' whose descriptions the model reads')
    pred.add_argument("--relations", help="relation types, in the same forms (default: entities only)")
    add_inference_arguments(pred)
    pred.add_argument("--input", required=True,
                      help='.txt (one text per line), .jsonl or .jsonl.gz (one object with a string "text" per '
                           "line), .parquet (a string column), or hf:NAME[:SPLIT] (a datasets dataset: a "
                           "save_to_disk directory, a local data directory or a hub name, streamed)")
    pred.add_argument("--text-column", default="text",
                      help="field or column holding the text in .jsonl, .parquet and datasets inputs (default: text)")
    pred.add_argument("--output", required=True,
                      help="OUT.jsonl or OUT.parquet: one record per input record, in order (pieces are committed "
                           "in OUT.pieces/ while it runs, merged at the end); any other name: a run directory of "
                           "pieces (for shards; `relex-jax merge` makes the file). An unfinished run with the same "
                           "model, input and settings is resumed; one with other settings is refused")
    pred.add_argument("--format", choices=("jsonl", "parquet"),
                      help="pieces of a run directory (default jsonl; an OUT file's suffix decides for it)")
    pred.add_argument("--overwrite", action="store_true",
                      help="replace OUTPUT and start afresh, discarding the pieces of an earlier run")
    pred.add_argument("--entities-key", default="entities",
                      help="output field for the entities (default: entities); an input record that already has "
                           "it is refused, not overwritten")
    pred.add_argument("--relations-key", default="relations", help="output field for the relations (default: relations)")
    pred.add_argument("--chunk-size", type=int, default=256,
                      help="input records per piece: read, predicted and committed together; bounds memory and "
                           "the work a kill can lose (default 256)")
    pred.add_argument("--shard", metavar="I/N",
                      help="process I of N (0-based): predict only pieces k with k %% N == I into the run directory "
                           "--output, which the N processes share")
    pred.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize (TPU pods, SLURM and Open MPI are detected; elsewhere "
                           "give the three options below) and take this process's share as with --shard")
    pred.add_argument("--coordinator-address", metavar="HOST:PORT", help="with --distributed: process 0's address")
    pred.add_argument("--num-processes", type=int, help="with --distributed: the number of processes")
    pred.add_argument("--process-id", type=int, help="with --distributed: this process's index")
    add_compilation_cache_argument(pred)
    pred.set_defaults(func=predict)
    mrg = sub.add_parser("merge", help="write a finished predict run directory as one ordered .jsonl or .parquet file")
    mrg.add_argument("run", help="run directory written by `relex-jax predict --output DIR`")
    mrg.add_argument("output", help="OUT.jsonl (any run) or OUT.parquet (a run with --format parquet)")
    mrg.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    mrg.set_defaults(func=merge)
    quick = sub.add_parser("quickstart", help="train, reload and evaluate a small model on the embedded corpus")
    quick.add_argument("--workdir", default="relex_quickstart",
                       help="where data, checkpoints, the model and the report go (default ./relex_quickstart); "
                            "re-running reuses a finished run")
    quick.add_argument("--max-steps", type=int, help="training steps (default: the quickstart's own)")
    add_compilation_cache_argument(quick)
    quick.set_defaults(func=quickstart)
    ev = sub.add_parser("evaluate", help="precision / recall / F1 of a model on annotated data")
    ev.add_argument("--model", required=True, help="relex-jax model directory, gliner directory or hub id")
    ev.add_argument("--data", required=True, help="gliner training .json, ../shared/data-style .jsonl, or hf:NAME[:SPLIT]")
    ev.add_argument("--labels", help="entity types, comma-separated or a JSON object (default: the types in the data)")
    ev.add_argument("--relations", help="relation types, in the same forms (default: the types in the data)")
    add_inference_arguments(ev)
    ev.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                    help="malformed records: fail (default) or skip them with a count")
    ev.add_argument("--output", help="JSON report path (default: eval_<data name>.json here, with --protocol "
                    "eval_<data name>_<protocol>.json; replaced if present)")
    ev.add_argument("--protocol", default="joint", metavar="NAME",
                    help="joint (default: entities and relations from the words), given-entities (gold spans given; "
                         "relation extraction and forced choice) or document (mention clusters); README "
                         "'Evaluation protocols'")
    ev.add_argument("--group-by", metavar="FIELD", help="joint: also score per value of this record field (e.g. domain)")
    ev.add_argument("--offered", type=int, nargs="+", metavar="M",
                    help="given-entities: offered relation label set sizes (default: all types, once)")
    ev.add_argument("--draws", type=int, help="given-entities: label subsets drawn per size (default 5)")
    ev.add_argument("--seed", type=int, help="given-entities: seed of the subset draws (default 0)")
    ev.add_argument("--per-label", type=int, metavar="N",
                    help="given-entities: keep at most the first N records per gold relation label")
    ev.add_argument("--given-entities", action="store_true", help="document: give every gold mention as input span")
    ev.add_argument("--label-group", type=int, metavar="K",
                    help="document: offer the relation labels in groups of K, one run per group")
    add_compilation_cache_argument(ev)
    ev.set_defaults(func=evaluate)
    srv = sub.add_parser("serve", help="serve a model over HTTP (JSON API, dynamic batching, Prometheus metrics)")
    add_serve_arguments(srv)
    add_compilation_cache_argument(srv)
    srv.set_defaults(func=serve)
    tr = sub.add_parser("train", help="train from a YAML config (see configs/); resumable")
    add_train_arguments(tr)
    add_compilation_cache_argument(tr)
    tr.set_defaults(func=train)
    return parser


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The `InferenceSettings` options (thresholds, overlap rules, batching, long texts, packing),
    shared by `predict` and `evaluate`."""
    parser.add_argument("--threshold", type=float, default=0.5, help="entity threshold (default 0.5)")
    parser.add_argument("--relation-threshold", type=float, help="relation threshold (default: --threshold)")
    parser.add_argument("--adjacency-threshold", type=float, help="adjacency-head threshold (default: --threshold)")
    parser.add_argument("--nested", action="store_true", help="allow nested entities (gliner's flat_ner=False)")
    parser.add_argument("--multi-label", action="store_true", help="allow several labels per span")
    parser.add_argument("--batch-size", type=int, default=8, help="texts (or windows) per forward (default 8)")
    parser.add_argument("--long-texts", choices=("window", "truncate"), default="window",
                        help="texts longer than --window-size words: overlapping windows (default) or cut")
    parser.add_argument("--window-size", type=int, help="words per window (default: the model's max_len)")
    parser.add_argument("--window-stride", type=int, help="words between window starts (default: 3/4 of a window)")
    parser.add_argument("--packing", type=int, nargs="?", const=True, metavar="TOKENS",
                        help="pack each batch's texts into shared encoder rows of TOKENS tokens (without a value: "
                             "the default row length, 512): same results, less padding; off by default")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `relex-jax serve` (`relex_jax.serve.schema.ServeConfig`)."""
    from relex_jax.serve.schema import ServeConfig

    default = ServeConfig()
    parser.add_argument("--model", required=True, help="relex-jax model directory, gliner directory or hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    parser.add_argument("--labels", help="entity types of requests that name none, comma-separated or a JSON object "
                                         "(default: requests must name them); also the types the warm-up compiles for")
    parser.add_argument("--relations", help="relation types of requests that name none, in the same forms "
                                            "(default: none)")
    add_inference_arguments(parser)  # the defaults of requests that do not set them; --batch-size: rows per forward
    parser.add_argument("--max-batch-texts", type=int, default=default.max_batch_texts,
                        help="dynamic batching: texts of compatible queued requests run as one model call "
                             f"(default {default.max_batch_texts}; 1: no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=default.max_wait_ms,
                        help="dynamic batching: how long a call waits after its oldest request arrived for others "
                             f"to join (default {default.max_wait_ms:g}: no waiting, a call takes what queued while "
                             "the previous one ran)")
    parser.add_argument("--max-body-bytes", type=int, default=default.max_body_bytes,
                        help=f"largest request body (default {default.max_body_bytes}); larger: 413")
    parser.add_argument("--max-texts", type=int, default=default.max_texts,
                        help=f"texts per request (default {default.max_texts}); more: 422")
    parser.add_argument("--max-labels", type=int, default=default.max_labels,
                        help=f"entity or relation types per text of a request (default {default.max_labels}); more: 422")
    parser.add_argument("--max-words", type=int, default=default.max_words,
                        help=f"words per text (default {default.max_words}; longer than the model's window: read as "
                             "windows); more: 422")
    parser.add_argument("--warmup-words", type=int, default=default.warmup_words,
                        help="at start-up, compile the shapes of texts up to this many words at every row count up to "
                             f"--batch-size (default {default.warmup_words}; 0: none); /v1/extract answers 503 until then")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_compilation_cache_argument(parser: argparse.ArgumentParser) -> None:
    """`--compilation-cache`, shared by the commands that compile (`relex_jax.compilation_cache`)."""
    parser.add_argument("--compilation-cache", metavar="DIR|off",
                        help="persistent XLA compilation cache: a directory, or off "
                             "(default: $RELEX_JAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/relex_jax/xla "
                             "or ~/.cache/relex_jax/xla)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `relex-jax train` and `python -m train`."""
    parser.add_argument("--config", help="YAML config (configs/*.yaml); omitted: all defaults")
    parser.add_argument("--workdir", required=True,
                        help="run directory: checkpoints/, metrics.jsonl, model/ (final), best_model/")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in --workdir (a fresh start if there is none)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                        help="config overrides, values parsed as YAML (optim.learning_rate=1e-4 mesh.fsdp=2)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "selfcheck" and (args.batch < 1 or args.seq_len < 1):
        parser.error("--batch and --seq-len must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
