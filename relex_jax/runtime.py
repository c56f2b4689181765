"""`OnnxRelexModel`: a model exported by `relex-jax export MODEL OUT --format onnx`, run by
onnxruntime, with `RelexModel`'s inference API and results (`relex_jax.host.Extractor`: the same
processor, batching, windows and decoder). It needs onnxruntime, tokenizers and numpy, not JAX:

    from relex_jax.runtime import OnnxRelexModel

    model = OnnxRelexModel.from_pretrained("OUT")
    entities, relations = model.inference(texts, labels, relations, threshold=0.5)

Not run by the graphs (refused with an error): packed rows (`packing`), vector outputs and
`relate_input_spans`. This module also holds the export's file contract (names of the files,
graph inputs and outputs), which `relex_jax.export` writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path
from typing import Any

import numpy as np

from relex_jax.config import RelexConfig, read_relex_config
from relex_jax.data.processor import Batch
from relex_jax.host import Extractor, load_tokenizer, slots
from relex_jax.settings import InferenceSettings

EXPORT_VERSION = 1
EXPORT_INFO = "export.json"
# The span stage's outputs that the relation stage reads, in order (`SpanScores` fields).
SCORE_FIELDS = ("entity_logits", "entity_count", "span_hidden", "relation_prompts", "words")
ONNX_SPAN_STAGE = "span_stage.onnx"
ONNX_RELATION_STAGE = "relation_stage.onnx"
# Input names of the ONNX graphs: `Batch`'s fields and the threshold; then the span stage's
# outputs, the masks, the thresholds and `slots` (E,), whose length is the entity cap.
SPAN_INPUTS = tuple(f.name for f in dataclasses.fields(Batch)) + ("threshold",)
RELATION_INPUTS = SCORE_FIELDS + ("span_mask", "entity_prompt_mask", "threshold", "adjacency_threshold", "slots")
RUNTIME_INSTALL = "pip install onnxruntime tokenizers numpy"
_NUMPY_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
                "tensor(float)": np.float32}


@dataclasses.dataclass
class OnnxRelexModel(Extractor):
    """An ONNX export in two onnxruntime sessions; `inference`, `inference_words`,
    `predict_entities`, `predict_relations` as `RelexModel`'s."""

    config: RelexConfig
    tokenizer: Any  # tokenizers.Tokenizer, or None when the directory has no tokenizer.json
    model_dir: Path
    sessions: tuple[Any, Any]  # (span stage, relation stage) onnxruntime.InferenceSession

    _row_multiple = 1  # one session: any number of rows

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, providers=("CPUExecutionProvider",),
                        threads: int | None = None) -> "OnnxRelexModel":
        """Load the directory `relex-jax export --format onnx` wrote. `threads`: onnxruntime's
        intra-op threads (default: its own choice, the physical cores)."""
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(f"OnnxRelexModel needs onnxruntime, which is not installed: {RUNTIME_INSTALL}") from None
        path = Path(path)
        read_export_info(path, "onnx")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        sessions = tuple(onnxruntime.InferenceSession(str(path / name), options, providers=list(providers))
                         for name in (ONNX_SPAN_STAGE, ONNX_RELATION_STAGE))
        return cls(read_relex_config(path), load_tokenizer(path), path, sessions)

    def check_settings(self, settings: InferenceSettings) -> None:
        super().check_settings(settings)
        refused = [name for name in ("packing", "return_vectors", "return_label_vectors", "relate_input_spans")
                   if getattr(settings, name)]
        if refused:
            raise ValueError(f"an ONNX export does not run {', '.join(refused)}")

    def _forward(self, inputs: tuple, threshold: float, adjacency_threshold: float | None = None,
                 packed: bool = False, keep_prompts: bool = False, given=None):
        """The span stage, then the relation stage under the entity cap `RelexModel` would use
        (the next power of two of the most spans passing in a text), as numpy arrays."""
        span, relation = self.sessions
        threshold = np.float32(threshold)
        scores = _run(span, dict(zip(SPAN_INPUTS, (*inputs, threshold))))
        cap = slots(int(scores["entity_count"].max(initial=0)))
        edge = threshold if adjacency_threshold is None else np.float32(adjacency_threshold)
        feeds = {**scores, "span_mask": inputs[4], "entity_prompt_mask": inputs[6], "threshold": threshold,
                 "adjacency_threshold": edge, "slots": np.zeros(cap, np.bool_)}
        out = _run(relation, feeds)
        return scores, types.SimpleNamespace(entity_logits=scores["entity_logits"], **out)


def read_export_info(path: Path, format: str) -> dict:
    """`path`'s export.json, refused unless `relex-jax export --format FORMAT` wrote it in this
    release's layout (a file missing or of another format or version is one clear error)."""
    info_file = path / EXPORT_INFO
    if not info_file.is_file():
        raise FileNotFoundError(f"{path} has no {EXPORT_INFO}: not a directory written by relex-jax export")
    info = json.loads(info_file.read_text())
    if info.get("format") != format or info.get("export_version") != EXPORT_VERSION:
        raise ValueError(f"{path} holds export format {info.get('format')!r} version {info.get('export_version')!r}; "
                         f"this reads {format} version {EXPORT_VERSION}")
    return info

def _run(session, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """One session's outputs by name, its inputs taken from `feeds` in the dtypes it declares."""
    names = [o.name for o in session.get_outputs()]
    given = {i.name: np.asarray(feeds[i.name], _NUMPY_TYPES[i.type]) for i in session.get_inputs()}
    return dict(zip(names, session.run(names, given)))
