"""The server's settings and the `POST /v1/extract` request, validated whole before it is queued.

A request is a JSON object:

    {"texts": ["...", ...] | "...",                 required, at most `max_texts`
     "labels": [...] | {name: description} | per-text lists,   default: the server's --labels
     "relations": same forms,                        default: the server's --relations, else none
     "threshold", "adjacency_threshold", "relation_threshold", "flat_ner", "multi_label",
     "long_texts", "window_size", "window_stride", "packing", "return_class_probs",
     "return_relations", "input_spans"}             as `RelexModel.inference`; defaults: the server's

Everything `inference` would refuse is refused here, with the same messages, so a request that
reaches the model can only fail for a reason no validation can foresee (see `batcher.Batcher`).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from typing import Any

from relex_jax.data.labels import LabelSet, normalize_labels
from relex_jax.data.processor import split_words
from relex_jax.settings import InferenceSettings, check_positive

# `InferenceSettings` fields a request may set; `batch_size` (rows per forward) is the server's.
REQUEST_OPTIONS = ("threshold", "adjacency_threshold", "relation_threshold", "flat_ner", "multi_label", "long_texts",
                   "window_size", "window_stride", "packing", "return_class_probs")
REQUEST_FIELDS = ("texts", "labels", "relations", "return_relations", "input_spans", *REQUEST_OPTIONS)
FLAGS = ("flat_ner", "multi_label", "return_class_probs", "return_relations")


class RequestError(Exception):
    """A request the server refuses: HTTP `status` (4xx) and a message for the JSON error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How `relex-jax serve` runs (each field is the CLI option of the same name).

    defaults: the options of requests that do not set them; `defaults.batch_size` is the rows per
        forward, which requests cannot change.
    labels, relations: the entity / relation types of requests that name none (None: requests
        must name entity types; relations default to none).
    max_body_bytes, max_texts, max_labels, max_words: limits per request (body size in bytes;
        texts; types per label set, entity or relation, of one text; words per text, as
        `inference` splits them; a text longer than the model's window is read as windows).
    max_batch_texts, max_wait_ms: dynamic batching: compatible requests queued together are run
        as one `inference` call of up to `max_batch_texts` texts (a larger request runs alone);
        a call waits at most `max_wait_ms` after its oldest request arrived for more to join
        (0: no waiting; a call takes what queued while the previous one ran). `max_batch_texts=1`
        turns batching off.
    warmup_words: at start-up, compile the forward shapes of texts up to this many words (both
        ends of each word bucket) at every row count up to `defaults.batch_size`; 0: none (see
        `batcher.warm_up`).
    """

    defaults: InferenceSettings = dataclasses.field(default_factory=InferenceSettings)
    labels: Any = None
    relations: Any = None
    max_body_bytes: int = 1 << 20
    max_texts: int = 64
    max_labels: int = 64
    max_words: int = 1024
    max_batch_texts: int = 32
    max_wait_ms: float = 0.0
    warmup_words: int = 64

    def __post_init__(self):
        for name in ("max_body_bytes", "max_texts", "max_labels", "max_words", "max_batch_texts"):
            check_positive(name, getattr(self, name))
        if isinstance(self.max_wait_ms, bool) or not isinstance(self.max_wait_ms, numbers.Real) or not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a number >= 0, got {self.max_wait_ms!r}")
        if isinstance(self.warmup_words, bool) or not isinstance(self.warmup_words, int) or self.warmup_words < 0:
            raise ValueError(f"warmup_words must be an integer >= 0, got {self.warmup_words!r}")
        if self.labels is not None:
            normalize_labels(self.labels, 1, "labels")
        normalize_labels(self.relations, 1, "relations", required=False)


@dataclasses.dataclass(frozen=True)
class Extraction:
    """A validated request: what one `inference` call needs for its texts."""

    texts: tuple[str, ...]
    entity_sets: tuple[LabelSet, ...]
    relation_sets: tuple[LabelSet, ...]
    input_spans: tuple | None  # per text None or ({"start", "end"}, ...); None: no filter at all
    settings: InferenceSettings
    return_relations: bool

    @property
    def key(self) -> tuple:
        """Requests with equal keys can share one `inference` call."""
        return self.settings, self.return_relations


def parse_request(body: bytes, config: ServeConfig, model) -> Extraction:
    """Parse and validate a request body (`model`: the `RelexModel` it will run on). Raises
    `RequestError`: 400 for a body that is not JSON, 422 for anything else refused."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type(request).__name__}")
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        hint = " (batch_size is the server's --batch-size)" if "batch_size" in unknown else ""
        raise RequestError(422, f"unknown field(s) {unknown}{hint}; a request may hold {list(REQUEST_FIELDS)}")
    try:
        return _validate(request, config, model)
    except (TypeError, ValueError) as exc:
        raise RequestError(422, str(exc)) from None


def _validate(request: dict, config: ServeConfig, model) -> Extraction:
    texts = request.get("texts")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise TypeError("texts must be a non-empty list of strings (or one string)")
    if len(texts) > config.max_texts:
        raise ValueError(f"{len(texts)} texts, more than this server's limit of {config.max_texts} per request "
                         "(--max-texts)")
    words = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        words.append(len(split_words(text)[0]))
        if words[-1] > config.max_words:
            raise ValueError(f"text {i} has {words[-1]} words, more than this server's limit of {config.max_words} "
                             "(--max-words)")

    labels = request["labels"] if request.get("labels") is not None else config.labels
    if labels is None:
        raise ValueError("labels is missing: name the entity types to extract (this server has no default --labels)")
    relations = request.get("relations", config.relations)
    entity_sets = normalize_labels(labels, len(texts), "labels")
    relation_sets = normalize_labels(relations, len(texts), "relations", required=False)
    for what, sets in (("labels", entity_sets), ("relations", relation_sets)):
        for i, label_set in enumerate(sets):
            if len(label_set.prompts) > config.max_labels:
                raise ValueError(f"{what} of text {i}: {len(label_set.prompts)} types, more than this server's limit "
                                 f"of {config.max_labels} (--max-labels)")
    for i, count in enumerate(words):
        if count and not entity_sets[i].prompts:
            raise ValueError(f"text {i} has no entity labels: name at least one type to extract")

    for flag in FLAGS:
        if flag in request and not isinstance(request[flag], bool):
            raise TypeError(f"{flag} must be true or false, got {request[flag]!r}")
    settings = dataclasses.replace(config.defaults, **{k: request[k] for k in REQUEST_OPTIONS if k in request})
    model.check_settings(settings)
    spans = None if request.get("input_spans") is None else _input_spans(request["input_spans"], len(texts))
    return Extraction(tuple(texts), tuple(entity_sets), tuple(relation_sets), spans, settings,
                      request.get("return_relations", True))


def _input_spans(spans, count: int) -> tuple:
    """`input_spans`: one entry per text, null or a list of {"start": int, "end": int}."""
    if not isinstance(spans, list) or len(spans) != count:
        raise TypeError(f"input_spans must be a list with one entry per text ({count}): null or a list of "
                        '{"start": char, "end": char} objects')
    out = []
    for i, entry in enumerate(spans):
        if entry is None:
            out.append(None)
            continue
        if not isinstance(entry, list) or not all(
            isinstance(span, Mapping) and span.keys() == {"start", "end"}
            and all(type(span[k]) is int for k in ("start", "end")) for span in entry
        ):
            raise TypeError(f'input_spans[{i}] must be null or a list of {{"start": int, "end": int}} objects')
        out.append(tuple(entry))
    return tuple(out)
