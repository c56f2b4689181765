"""Export a model's two inference stages as StableHLO (`jax.export`) or ONNX, and run them again.

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

`export_model(model_dir, out_dir, format="onnx")` writes the same stages as ONNX graphs, converted
by jax2onnx (an optional dependency, `ONNX_INSTALL`), with the weights inside them as initializers
(over 1 MiB: in `<graph>.data` beside it), plus the config, tokenizer files and export.json, and
no Orbax variables:

  span_stage.onnx           inputs SPAN_INPUTS -> SCORE_FIELDS
  relation_stage.onnx       inputs RELATION_INPUTS -> entity_index, entity_mask, entities,
                            pair_mask, relation_logits (and adjacency with an adjacency head)

with the same symbolic sizes (named b, t, w, c, r, e in the graphs). The graphs are traced from
`RelexModule(exportable=True)`, whose formulations ONNX can express where the jitted ones are
faster; outputs are the same. Also not exported to ONNX: `subtoken_pooling="max"` (refused).
"""

from __future__ import annotations

import contextlib
import copy
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
from relex_jax.runtime import (  # the export's file contract
    EXPORT_INFO,
    EXPORT_VERSION,
    ONNX_RELATION_STAGE,
    ONNX_SPAN_STAGE,
    RELATION_INPUTS,
    SCORE_FIELDS,
    SPAN_INPUTS,
    read_export_info,
)

FORMATS = ("stablehlo", "onnx")
SPAN_STAGE = "span_stage.stablehlo"
RELATION_STAGE = "relation_stage.stablehlo"


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


def _stage_functions(module: RelexModule):
    """The two stages as functions of the variables: the span stage returns `SCORE_FIELDS`, the
    relation stage the non-None `RelexOutput` fields by name, with the entity cap E taken from
    the length of its `slots` input (symbolic sizes come from input shapes only)."""
    def span_stage(variables, *inputs):
        scores = module.apply(variables, *inputs, method=RelexModule.score_spans)
        return tuple(getattr(scores, name) for name in SCORE_FIELDS)

    def relation_stage(variables, scores, span_mask, entity_prompt_mask, threshold, adjacency_threshold, slots):
        out = module.apply(variables, SpanScores(*scores), span_mask, entity_prompt_mask, threshold,
                           adjacency_threshold, max_entities=slots.shape[0], method=RelexModule.relate)
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if getattr(out, f.name) is not None}

    return span_stage, relation_stage


def _stage_inputs(model: RelexModel, span_stage) -> tuple[tuple, tuple]:
    """Symbolic inputs of both stages (without the variables): B, T, W, C, R for the span stage;
    its outputs, the masks, the thresholds and `slots` (E,) for the relation stage."""
    b, t, w, c, r = export.symbolic_shape("b, t, w, c, r", constraints=_constraints(model.config))
    spans = _span_inputs(model.config, (b, t, w, c, r))
    variables = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.variables)
    scores = jax.eval_shape(span_stage, variables, *spans)

    # The relation stage gets its own scope: constraints may only name sizes its inputs have (no T).
    scope = export.SymbolicScope()

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(export.symbolic_shape(",".join(map(str, shape)), scope=scope), dtype)

    scalar = jax.ShapeDtypeStruct((), np.float32)
    relations = (tuple(spec(a.shape, a.dtype) for a in scores), spec(spans[4].shape, np.bool_),
                 spec(spans[6].shape, np.bool_), scalar, scalar, spec(("e",), np.bool_))
    return spans, relations


def export_stages(model: RelexModel) -> tuple[export.Exported, export.Exported]:
    """The two stages of a loaded model as `jax.export.Exported` programs with symbolic sizes."""
    span_stage, relation_stage = _stage_functions(model.module)
    span_inputs, relation_inputs = _stage_inputs(model, span_stage)
    variables = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.variables)
    spans = export.export(jax.jit(span_stage))(variables, *span_inputs)
    relations = export.export(jax.jit(relation_stage))(variables, *relation_inputs)
    return spans, relations


# jax2onnx without its dependencies: it pins orbax-checkpoint<0.11.37 (our writer needs newer) and
# pulls packages conversion never imports (equinox, dm-pix, netron, orbax-export, ...).
ONNX_INSTALL = "pip install 'relex-jax[onnx]' && pip install --no-deps jax2onnx==0.17.1"


def _jax2onnx():
    """jax2onnx, or an ImportError that says how to install it (an optional extra)."""
    try:
        import jax2onnx
        import onnx  # noqa: F401 (what jax2onnx writes with)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs {exc.name}, which is not installed: {ONNX_INSTALL}") from None
    return jax2onnx


@contextlib.contextmanager
def _atomic_symbolic_dims():
    """jax2onnx deep-copies gather descriptions holding symbolic sizes, and a deep-copied JAX
    symbolic size breaks mid-copy (its scope is rebuilt without its state). They are immutable,
    so while converting, deep copies share them."""
    dim = export.symbolic_shape("a")[0]
    types = (type(dim), type(dim.scope))
    saved = {t: copy._deepcopy_dispatch.get(t) for t in types}
    copy._deepcopy_dispatch.update(dict.fromkeys(types, copy._deepcopy_atomic))
    try:
        yield
    finally:
        for t, copier in saved.items():
            if copier is None:
                copy._deepcopy_dispatch.pop(t, None)
            else:
                copy._deepcopy_dispatch[t] = copier


def onnx_stage_writers(model: RelexModel) -> dict[str, Any]:
    """The two stages of a loaded model as ONNX graphs: file name -> a function that converts the
    stage and writes it at the path it is given (weights as initializers, those over 1 MiB in a
    `.data` file beside it). Sizes are symbolic as in `export_stages`, named b, t, w, c, r, e."""
    jax2onnx = _jax2onnx()
    span_stage, relation_stage = _stage_functions(model.module.clone(exportable=True))
    span_inputs, relation_inputs = _stage_inputs(model, span_stage)
    variables = model.variables
    # entity_logits passes through the relation stage unchanged: the span stage's output serves.
    relation_outputs = [n for n in jax.eval_shape(relation_stage, variables, *relation_inputs) if n not in SCORE_FIELDS]
    count = len(SCORE_FIELDS)

    def relations(*inputs):
        out = relation_stage(variables, inputs[:count], *inputs[count:])
        return tuple(out[name] for name in relation_outputs)

    def writer(fn, inputs, input_names, output_names):
        def write(path: Path):
            with _atomic_symbolic_dims():
                jax2onnx.to_onnx(fn, list(inputs), model_name=path.stem, return_mode="file", output_path=str(path),
                                 input_names=list(input_names), output_names=list(output_names))
        return write

    return {ONNX_SPAN_STAGE: writer(functools.partial(span_stage, variables), span_inputs, SPAN_INPUTS, SCORE_FIELDS),
            ONNX_RELATION_STAGE: writer(relations, (*relation_inputs[0], *relation_inputs[1:]), RELATION_INPUTS,
                                        relation_outputs)}


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike, format: str = "stablehlo",
                 overwrite: bool = False) -> Path:
    """Export a relex-jax or gliner model directory (or hub id) to `out_dir` (see the module
    docstring); `out_dir` is written atomically and must not exist unless `overwrite`."""
    if format not in FORMATS:
        raise ValueError(f"unsupported export format {format!r}; supported: {', '.join(FORMATS)}")
    if format == "onnx":
        _jax2onnx()  # a missing package fails before the model loads
    model = RelexModel.from_pretrained(model_dir, devices=jax.local_devices()[:1])
    info = {"format": format, "export_version": EXPORT_VERSION, "jax_version": jax.__version__,
            "max_width": model.config.max_width, "symbolic": ["b", "t", "w", "c", "r", "e"]}
    if format == "onnx":
        from importlib.metadata import version

        files = onnx_stage_writers(model)
        info.update(jax2onnx_version=version("jax2onnx"), stages=list(files))
        variables = None  # in the graphs
    else:
        spans, relations = export_stages(model)
        info.update(constraints=list(_constraints(model.config)), stages=[SPAN_STAGE, RELATION_STAGE])
        files = {SPAN_STAGE: bytes(spans.serialize()), RELATION_STAGE: bytes(relations.serialize())}
        variables = jax.device_get(model.variables)
    files[EXPORT_INFO] = json.dumps(info, indent=2)
    tokenizer_dir = model.model_dir if (model.model_dir / "tokenizer.json").is_file() else None
    return save_relex_dir(out_dir, model.config, variables, tokenizer_dir, overwrite=overwrite, extra_files=files)


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
    read_export_info(path, "stablehlo")
    base = RelexModel.from_pretrained(path, devices=jax.local_devices()[:1])
    programs = tuple(export.deserialize(bytearray((path / name).read_bytes())) for name in (SPAN_STAGE, RELATION_STAGE))
    return ExportedRelexModel(base.config, base.module, base.variables, base.tokenizer, base.model_dir,
                              devices=base.devices, programs=programs)
