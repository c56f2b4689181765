"""Export a model's two inference stages as StableHLO (`jax.export`), and run them again.

`export_model(model_dir, out_dir)` writes a relex-jax model directory (config, Orbax variables,
tokenizer files, so `RelexModel.from_pretrained(out_dir)` still works) plus:

  span_stage.stablehlo      `RelexModule.score_spans`: inputs (B, T), (B, W, K), (B, C), (B, R) -> entity
                            logits and what the relation stage reads
  relation_stage.stablehlo  `RelexModule.relate`: those outputs -> at most E selected spans per text,
                            all their pairs, relation logits
  export.json               format version, the jax version that wrote it, the symbolic dimensions

Every size is symbolic: batch B, tokens T, words W, entity labels C, relation labels R, and the
entity cap E (given by the length of the relation stage's `slots` input, since `jax.export` takes
symbolic sizes from input shapes only). K, the span width, is the model's `max_width`. The weights
are inputs of the programs, not constants in them, so each program stays small and a checkpoint
of any size fits the serialisation. `load_stablehlo(out_dir)` gives a `RelexModel` whose stages
are these programs: no tracing or Python model code runs, and `inference` returns what the jitted
model returns. Not exported: packed rows (`packing`), vector outputs and the given-entities
relation stage (`relate_input_spans`); the loaded model refuses them with a clear error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import export

from relex_jax.checkpoint.convert import save_relex_dir
from relex_jax.inference import RelexModel
from relex_jax.modeling.relex import RelexModule, RelexOutput, SpanScores

FORMATS = ("stablehlo",)
EXPORT_VERSION = 1
EXPORT_INFO = "export.json"
SPAN_STAGE = "span_stage.stablehlo"
RELATION_STAGE = "relation_stage.stablehlo"
# The SpanScores fields the span stage returns and the relation stage reads, in order.
SCORE_FIELDS = ("entity_logits", "entity_count", "span_hidden", "relation_prompts", "words")


def _span_inputs(config, dims) -> tuple[jax.ShapeDtypeStruct, ...]:
    """`RelexModule.score_spans`'s inputs (`Batch.model_inputs()` and the threshold), symbolic."""
    b, t, w, c, r = dims
    spec = jax.ShapeDtypeStruct
    i32 = np.int32
    return (spec((b, t), i32), spec((b, t), i32), spec((b, t), i32), spec((b,), i32),
            spec((b, w, config.max_width), np.bool_), spec((b, c), i32), spec((b, c), np.bool_),
            spec((b, r), i32), spec((b, r), np.bool_), spec((), np.float32))


def _constraints(config) -> tuple[str, ...]:
    """Facts about the symbolic sizes the model code needs: absolute positions stop at the table's
    end (inference refuses longer rows before they run), and every row holds at least [CLS], a
    prompt marker and [SEP]. `t^2 >= 2*t` follows from `t >= 2`, but the symbolic solver only
    reasons linearly: DeBERTa's relative-position shift reshapes (T, 2T-1) scores to one axis."""
    out = ["t >= 2", "t^2 >= 2*t"]
    if config.encoder.position_biased_input:
        out.append(f"t <= {config.encoder.max_position_embeddings}")
    return tuple(out)


def export_stages(model: RelexModel) -> tuple[export.Exported, export.Exported]:
    """The two stages of a loaded model as `jax.export.Exported` programs with symbolic sizes."""
    b, t, w, c, r = export.symbolic_shape("b, t, w, c, r", constraints=_constraints(model.config))
    variables = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.variables)
    module = model.module

    def span_stage(variables, *inputs):
        scores = module.apply(variables, *inputs, method=RelexModule.score_spans)
        return tuple(getattr(scores, name) for name in SCORE_FIELDS)

    def relation_stage(variables, scores, span_mask, entity_prompt_mask, threshold, adjacency_threshold, slots):
        out = module.apply(variables, SpanScores(*scores), span_mask, entity_prompt_mask, threshold,
                           adjacency_threshold, max_entities=slots.shape[0], method=RelexModule.relate)
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if getattr(out, f.name) is not None}

    inputs = _span_inputs(model.config, (b, t, w, c, r))
    spans = export.export(jax.jit(span_stage))(variables, *inputs)

    # The relation stage gets its own scope: constraints may only name sizes its inputs have (no T).
    scope = export.SymbolicScope()

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(export.symbolic_shape(",".join(map(str, shape)), scope=scope), dtype)

    scores = tuple(spec(a.shape, a.dtype) for a in spans.out_avals)
    scalar = jax.ShapeDtypeStruct((), np.float32)
    relations = export.export(jax.jit(relation_stage))(
        variables, scores, spec(inputs[4].shape, np.bool_), spec(inputs[6].shape, np.bool_), scalar, scalar,
        spec(("e",), np.bool_),
    )
    return spans, relations


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike, format: str = "stablehlo",
                 overwrite: bool = False) -> Path:
    """Export a relex-jax or gliner model directory (or hub id) to `out_dir` (see the module
    docstring); `out_dir` is written atomically and must not exist unless `overwrite`."""
    if format not in FORMATS:
        raise ValueError(f"unsupported export format {format!r}; supported: {', '.join(FORMATS)}")
    model = RelexModel.from_pretrained(model_dir, devices=jax.local_devices()[:1])
    spans, relations = export_stages(model)
    info = {"format": format, "export_version": EXPORT_VERSION, "jax_version": jax.__version__,
            "max_width": model.config.max_width, "symbolic": ["b", "t", "w", "c", "r", "e"],
            "constraints": list(_constraints(model.config)), "stages": [SPAN_STAGE, RELATION_STAGE]}
    files = {SPAN_STAGE: bytes(spans.serialize()), RELATION_STAGE: bytes(relations.serialize()),
             EXPORT_INFO: json.dumps(info, indent=2)}
    tokenizer_dir = model.model_dir if (model.model_dir / "tokenizer.json").is_file() else None
    return save_relex_dir(out_dir, model.config, jax.device_get(model.variables), tokenizer_dir,
                          overwrite=overwrite, extra_files=files)


@dataclasses.dataclass
class ExportedRelexModel(RelexModel):
    """A `RelexModel` whose stages are the exported programs of `export_model` (one device)."""

    programs: tuple[Any, Any] = None  # (span stage, relation stage) `jax.export.Exported`

    @functools.cached_property
    def _stages(self):
        span_program, relation_program = self.programs

        def score(variables, *inputs, keep_prompts=False):
            if keep_prompts:
                raise ValueError("an exported model has no label vectors (return_label_vectors)")
            return SpanScores(*span_program.call(variables, *inputs))

        def relate(variables, scores, span_mask, entity_prompt_mask, threshold, adjacency_threshold, max_entities,
                   entity_index=None, entity_mask=None):
            if entity_index is not None:
                raise ValueError("an exported model scores relations between the spans passing the threshold "
                                 "only (no relate_input_spans)")
            fields = tuple(getattr(scores, name) for name in SCORE_FIELDS)
            edge = threshold if adjacency_threshold is None else adjacency_threshold
            out = relation_program.call(variables, fields, span_mask, entity_prompt_mask, threshold, edge,
                                        np.zeros(max_entities, np.bool_))
            return RelexOutput(**out)

        def unsupported(what):
            def refuse(*args, **kwargs):
                raise ValueError(f"an exported model has no {what}")
            return refuse

        return score, unsupported("packed span stage (packing)"), relate, unsupported("vector outputs")


def load_stablehlo(path: str | os.PathLike) -> ExportedRelexModel:
    """The model `export_model` wrote to `path`, running its exported programs."""
    path = Path(path)
    info_file = path / EXPORT_INFO
    if not info_file.is_file():
        raise FileNotFoundError(f"{path} has no {EXPORT_INFO}: not a directory written by export_model")
    info = json.loads(info_file.read_text())
    if info.get("format") != "stablehlo" or info.get("export_version") != EXPORT_VERSION:
        raise ValueError(f"{path} holds export format {info.get('format')!r} version {info.get('export_version')!r}; "
                         f"this relex-jax reads stablehlo version {EXPORT_VERSION}")
    base = RelexModel.from_pretrained(path, devices=jax.local_devices()[:1])
    programs = tuple(export.deserialize(bytearray((path / name).read_bytes())) for name in (SPAN_STAGE, RELATION_STAGE))
    return ExportedRelexModel(base.config, base.module, base.variables, base.tokenizer, base.model_dir,
                              devices=base.devices, programs=programs)
