"""`RelexModel`: a loaded model (config, Flax module, variables, tokenizer), its jitted forward,
and gliner's inference API on top of it (`inference`, `predict_entities`, `predict_relations`),
plus `inference_words` for texts already split into words (results in word positions); the API
itself is `relex_jax.host.Extractor`, which an ONNX runtime shares.

Texts go through the host-side processor (`relex_jax.data`), the jitted forward (sharded over
the local devices, data parallel) and the host-side decoder (`relex_jax.decoding`). Batches are
padded to shape buckets so a corpus compiles a handful of shapes, not one per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from relex_jax.checkpoint.convert import RELEX_CONFIG, load_relex_dir
from relex_jax.checkpoint.gliner import GLINER_CONFIG, load_gliner_checkpoint
from relex_jax.config import RelexConfig
from relex_jax.decoding import EntitySpan, Relation
from relex_jax.host import (  # noqa: F401 (TextError, WordEntity, WordRelation: re-exported)
    Extractor,
    TextError,
    WordEntity,
    WordRelation,
    load_tokenizer,
    slots,
)
from relex_jax.modeling.relex import RelexModule, RelexOutput, SpanScores
from relex_jax.settings import InferenceSettings

logger = logging.getLogger("relex_jax")


@dataclasses.dataclass
class RelexModel(Extractor):
    config: RelexConfig
    module: RelexModule
    variables: Any  # {"params": ...} (+ "batch_stats" for the TuckER scorer)
    tokenizer: Any  # tokenizers.Tokenizer, or None when the directory has no tokenizer.json
    model_dir: Path
    devices: Sequence[Any] | None = None  # batches are split over these (data parallel); None: all local
    compiled_shapes: set = dataclasses.field(default_factory=set)  # (input shapes, entity cap) pairs seen
    # (vector outputs compile a span stage that keeps the prompts, and the `vectors` stage, on top)

    def __post_init__(self):
        self.devices = tuple(self.devices or jax.local_devices())
        self._replicated = NamedSharding(self._mesh, PartitionSpec())
        self._rows = NamedSharding(self._mesh, PartitionSpec("data"))
        self.variables = jax.device_put(self.variables, self._replicated)

    def set_variables(self, variables) -> None:
        """Swap in new weights of the same shapes (e.g. a training run's dev evaluation): the
        jitted stages, and what they compiled, are kept."""
        self.variables = jax.device_put(variables, self._replicated)

    @property
    def _row_multiple(self) -> int:
        return len(self.devices)

    @functools.cached_property
    def _mesh(self) -> Mesh:
        return Mesh(np.asarray(self.devices), ("data",))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, dtype=None, devices=None) -> "RelexModel":
        """Load a relex-jax model directory, or a gliner checkpoint (directory or hub id, converted
        in memory). `dtype` sets the compute dtype (parameters stay float32); `devices` the
        devices batches are split over (default: all local devices)."""
        path = Path(path_or_hub_id).expanduser()
        if (path / RELEX_CONFIG).is_file():
            config, variables = load_relex_dir(path)
            model_dir = path
        elif (path / GLINER_CONFIG).is_file() or not path.exists():
            config, variables, model_dir = load_gliner_checkpoint(path_or_hub_id)
        else:
            raise FileNotFoundError(f"{path} holds neither {RELEX_CONFIG} (relex-jax) nor {GLINER_CONFIG} (gliner)")
        module = RelexModule(config) if dtype is None else RelexModule(config, dtype=dtype)
        return cls(config, module, variables, load_tokenizer(model_dir), Path(model_dir), devices=devices)

    @functools.cached_property
    def _stages(self):
        """The jitted stages: span scoring (one text per row, or packed rows; `keep_prompts` for
        label vectors compiles its own variant), relations under a static entity cap, and the
        vector outputs of decoded results (compiled only when asked)."""
        def stage(method, *static):
            return jax.jit(functools.partial(self.module.apply, method=method), static_argnames=static)

        return (stage(RelexModule.score_spans, "keep_prompts"), stage(RelexModule.score_packed_spans, "keep_prompts"),
                stage(RelexModule.relate, "max_entities"), stage(RelexModule.vectors, "spans", "labels"))

    def forward(
        self, inputs: tuple, threshold: float, max_entities: int | None = None, adjacency_threshold: float | None = None,
        packed: bool = False,
    ) -> RelexOutput:
        """Run the model on prepared inputs (the positional arguments of `RelexModule`, or with
        `packed` of `RelexModule.score_packed_spans` (`PackedBatch.model_inputs()`), without the
        thresholds), rows and texts split over `devices`, whose count must divide both.

        The entity cap E is sized per batch from the span stage's counts (the next power of
        two, at least `MIN_ENTITY_CAP`), so nothing is cut and texts with few entities do not
        pay for a large pair grid; a pinned `max_entities` too small for the batch raises."""
        return self._forward(inputs, threshold, max_entities, adjacency_threshold, packed)[1]

    def _forward(self, inputs: tuple, threshold: float, max_entities: int | None = None,
                 adjacency_threshold: float | None = None, packed: bool = False, keep_prompts: bool = False,
                 given: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[SpanScores, RelexOutput]:
        """`forward`, also returning the span stage's outputs (on the devices), with the projected
        entity prompts when `keep_prompts`; `given` (flat span index, mask), both (texts, E), are
        the relation stage's entities instead of the spans passing the threshold."""
        span_at = 6 if packed else 4  # position of span_mask; the entity prompt mask follows its index
        for what, count in (("rows", len(inputs[0])), ("texts", len(inputs[span_at]))):
            if count % len(self.devices):
                raise ValueError(f"a batch of {count} {what} cannot be split evenly over {len(self.devices)} devices")
        inputs = jax.device_put(tuple(inputs), self._rows)
        score, score_packed, relate, _ = self._stages
        start = time.perf_counter()
        scores = (score_packed if packed else score)(self.variables, *inputs, np.float32(threshold),
                                                     keep_prompts=keep_prompts)
        if given is not None:
            index, mask = jax.device_put(given, self._rows)
            out = relate(self.variables, scores, inputs[span_at], inputs[span_at + 2], np.float32(threshold),
                         None if adjacency_threshold is None else np.float32(adjacency_threshold),
                         max_entities=given[0].shape[1], entity_index=index, entity_mask=mask)
            return scores, out
        needed = int(np.asarray(scores.entity_count).max(initial=0))
        if max_entities is not None and needed > max_entities:
            raise ValueError(
                f"{needed} spans passed threshold {threshold} in one text, more than max_entities={max_entities}; "
                "raise max_entities or the threshold, or pass max_entities=None to size it automatically"
            )
        cap = max_entities or slots(needed)
        edge = None if adjacency_threshold is None else np.float32(adjacency_threshold)
        span_mask, entity_prompt_mask = inputs[span_at], inputs[span_at + 2]
        out = relate(self.variables, scores, span_mask, entity_prompt_mask, np.float32(threshold), edge, max_entities=cap)
        signature = (tuple(x.shape for x in inputs), cap)
        if signature not in self.compiled_shapes:
            self.compiled_shapes.add(signature)
            logger.debug("new forward shapes %s (compile + run %.2f s; %d so far)", signature,
                         time.perf_counter() - start, len(self.compiled_shapes))
        return scores, out

    def _attach_vectors(self, scores: SpanScores, spans: list[list[EntitySpan]], relations: list[list[Relation]],
                        settings: InferenceSettings) -> tuple[list[list[EntitySpan]], list[list[Relation]]]:
        """gliner's vector outputs for one batch's decoded spans and relations (rows of the span
        stage, spans in the row's word positions): host-built indices of the decoded results,
        one gather on the devices (`RelexModule.vectors`); only the vectors of the decoded results
        (padded to a few sizes, `slots`) come back to the host."""
        rows = scores.entity_logits.shape[0]
        span_index = np.zeros((rows, slots(max(map(len, spans)))), np.int32)
        class_index = np.zeros_like(span_index)
        pair_index = np.zeros((rows, slots(max(map(len, relations))), 2), np.int32)
        relation_index = np.zeros(pair_index.shape[:2], np.int32)
        for b, row in enumerate(spans):
            for i, span in enumerate(row):
                span_index[b, i], class_index[b, i] = span.span_index, span.class_index
        for b, row in enumerate(relations):
            for i, rel in enumerate(row):
                pair_index[b, i], relation_index[b, i] = (rel.head, rel.tail), rel.class_index
        indices = jax.device_put((span_index, class_index, pair_index, relation_index), self._rows)
        out = jax.device_get(self._stages[3](self.variables, scores, *indices, spans=settings.return_vectors,
                                             labels=settings.return_label_vectors))
        vectors = {f.name: np.asarray(getattr(out, f.name), np.float32) for f in dataclasses.fields(out)
                   if getattr(out, f.name) is not None}

        def pick(keys: dict[str, str], b: int, i: int) -> dict[str, np.ndarray]:
            return {key: vectors[name][b, i] for key, name in keys.items() if name in vectors}

        entity_keys = {"vector": "entity", "label_vector": "entity_label"}
        relation_keys = {"vector": "relation", "label_vector": "relation_label",
                         "head_relation_vector": "relation_head", "tail_relation_vector": "relation_tail"}
        spans = [[s._replace(vectors=pick(entity_keys, b, i)) for i, s in enumerate(row)] for b, row in enumerate(spans)]
        relations = [[r._replace(vectors=pick(relation_keys, b, i)) for i, r in enumerate(row)]
                     for b, row in enumerate(relations)]
        return spans, relations


