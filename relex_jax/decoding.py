"""Host-side decoding of `RelexOutput` into entities and relations, as gliner's `SpanRelexDecoder`.

Pure numpy. Candidate extraction is vectorised; greedy overlap removal loops in Python over the
candidates of one row (it is inherently sequential), exactly as gliner's `BaseDecoder.greedy_search`.

Pipeline (spec §11):

    spans = decode_entities(out.entity_logits, num_words, None, class_names, threshold, flat_ner)
    rels = decode_relations(spans, out.entity_index, out.entity_mask, out.pair_mask,
                            out.relation_logits, relation_names, relation_threshold, max_width)
    ents = entities_to_dicts(spans[b], text, start_offsets, end_offsets)
    rel_dicts = relations_to_dicts(rels[b], ents)

Reference behaviour reproduced:

- entity probabilities are the float32 sigmoid of the logits and are compared with the threshold
  in float32 (torch compares a float32 tensor with a Python scalar in float32), strictly (`>`);
- class slots at or beyond a row's label count never produce a span (gliner masks them to -inf);
- spans ending past the row's word count are dropped;
- candidates come in row-major (start, width, class) order, are stably sorted by descending score,
  greedily accepted with gliner's flat / nested overlap rules, then stably sorted by start;
- relation probabilities are converted to Python floats *before* the strict comparison with the
  relation threshold (gliner compares `float(prob) <= threshold` in double precision);
- a model entity maps to the first decoded span (in start-sorted order) with the same boundaries;
  pairs are visited in row-major (head, tail) order, then classes in order; unmapped pairs skipped.
"""

from __future__ import annotations

from typing import Any, Collection, NamedTuple, Sequence

import numpy as np

__all__ = [
    "EntitySpan",
    "Relation",
    "decode_entities",
    "decode_relations",
    "entities_to_dicts",
    "merge_windows",
    "relations_to_dicts",
    "sigmoid",
]


class EntitySpan(NamedTuple):
    start: int  # first word (inclusive)
    end: int  # last word (inclusive)
    label: str
    score: float  # Python float of the float32 probability
    span_index: int  # flat span index start * K + width into the (W, K) span grid
    class_index: int  # zero-based entity class slot
    class_probs: dict[str, float] | None = None  # the row's top classes for this span (`class_probs=True`)
    vectors: dict[str, np.ndarray] | None = None  # gliner's "vector" / "label_vector", when asked


class Relation(NamedTuple):
    head: int  # index into the row's decoded entity list
    label: str
    tail: int
    score: float  # Python float of the float32 probability
    class_index: int | None = None  # zero-based relation class slot
    vectors: dict[str, np.ndarray] | None = None  # gliner's relation vectors, when asked (its dict keys)


# Classes listed per span by `class_probs=True` (gliner's `return_class_probs` top-k).
CLASS_PROBS_TOP = 5


def sigmoid(x) -> np.ndarray:
    """float32 logistic function (the reference's `torch.sigmoid` on float32 logits).

    `1 / (1 + e)` in float32 with `e = exp(-x)` rounded from double: agrees with torch's CPU
    sigmoid on ~96% of float32 inputs and is within 1 ulp elsewhere (float32 `np.exp`: ~83%).
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        e = np.exp(-x.astype(np.float64)).astype(np.float32)
        return (np.float32(1) / (np.float32(1) + e)).astype(np.float32)


def _per_row(value, batch: int, name: str) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        value = list(value)
        if len(value) != batch:
            raise ValueError(f"{name} must have length {batch}, got {len(value)}")
        return value
    return [value] * batch


def _names_per_row(names, batch: int, name: str) -> list[list[str]]:
    """A shared list of names, or one list per row."""
    names = list(names)
    if names and not isinstance(names[0], str):
        if len(names) != batch:
            raise ValueError(f"{name} must have one list per row ({batch}), got {len(names)}")
        return [list(row) for row in names]
    return [names] * batch


def _overlaps(a: tuple[int, int], b: tuple[int, int], flat_ner: bool, multi_label: bool) -> bool:
    """gliner's `has_overlapping` (flat) / `has_overlapping_nested` (nested) on (start, end)."""
    if a == b:
        return not multi_label
    disjoint = a[0] > b[1] or b[0] > a[1]
    if flat_ner:
        return not disjoint
    nested = (a[0] <= b[0] and a[1] >= b[1]) or (b[0] <= a[0] and b[1] >= a[1])
    return not (disjoint or nested)


def greedy_search(spans: list[EntitySpan], flat_ner: bool = True, multi_label: bool = False) -> list[EntitySpan]:
    """gliner's `BaseDecoder.greedy_search`: best-first, drop overlapping spans, sort by start."""
    kept: list[EntitySpan] = []
    bounds: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda s: -s.score):  # stable: ties keep candidate order
        key = (span.start, span.end)
        if not any(_overlaps(key, other, flat_ner, multi_label) for other in bounds):
            kept.append(span)
            bounds.append(key)
    kept.sort(key=lambda s: s.start)
    return kept


def decode_entities(
    entity_logits,
    num_words: Sequence[int],
    num_classes: int | Sequence[int] | None,
    class_names: Sequence[str] | Sequence[Sequence[str]],
    threshold: float | Sequence[float],
    flat_ner: bool | Sequence[bool] = True,
    multi_label: bool | Sequence[bool] = False,
    allowed_spans: Sequence[Collection[tuple[int, int]] | None] | None = None,
    class_probs: bool = False,
) -> list[list[EntitySpan]]:
    """Decode entity spans per row, as gliner's `SpanRelexDecoder.decode` (entities part).

    Args:
        entity_logits: (B, W, K, C) entity logits (`RelexOutput.entity_logits`).
        num_words: (B,) words per text; spans with start + width + 1 > num_words are dropped.
        num_classes: real label count per row (int or per row); class slots >= it are ignored.
            None: the length of that row's `class_names`.
        class_names: entity label names, shared or one list per row (index c -> name).
        threshold: entity threshold (strict), shared or per row.
        flat_ner, multi_label: greedy-search mode, shared or per row.
        allowed_spans: gliner's `input_spans`: per row, the (start, end) word spans (end
            inclusive) that may be entities, or None for every span; spans outside the grid
            are ignored (callers warn about them).
        class_probs: gliner's `return_class_probs`: each accepted span carries its row's
            `CLASS_PROBS_TOP` most probable classes, {name: probability}, best first.

    Returns:
        per row, the accepted `EntitySpan`s sorted by start.
    """
    logits = np.asarray(entity_logits)
    batch, _, max_width, width_c = logits.shape
    names = _names_per_row(class_names, batch, "class_names")
    if num_classes is None:
        counts = np.array([len(row) for row in names], dtype=np.int64)
    else:
        counts = np.asarray(_per_row(num_classes, batch, "num_classes"), dtype=np.int64)
    words = np.asarray(num_words, dtype=np.int64).reshape(batch)
    thresholds = np.asarray(_per_row(threshold, batch, "threshold"), dtype=np.float32)
    flat_values = _per_row(flat_ner, batch, "flat_ner")
    multi_values = _per_row(multi_label, batch, "multi_label")

    probs = sigmoid(logits)
    num_w = logits.shape[1]
    ends = np.arange(num_w)[:, None] + np.arange(max_width)[None, :] + 1  # (W, K) exclusive end
    in_text = ends[None] <= words[:, None, None]  # (B, W, K)
    real_class = np.arange(width_c)[None, :] < counts[:, None]  # (B, C)
    passed = (probs > thresholds[:, None, None, None]) & in_text[..., None] & real_class[:, None, None, :]
    if allowed_spans is not None:
        passed &= _span_grid(allowed_spans, batch, num_w, max_width)[..., None]
    b_idx, s_idx, k_idx, c_idx = np.nonzero(passed)  # row-major (b, l, k, c), as torch.where
    scores = probs[b_idx, s_idx, k_idx, c_idx].tolist()
    bounds = np.searchsorted(b_idx, np.arange(batch + 1))

    result = []
    for b in range(batch):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        row_names = names[b]
        candidates = [
            EntitySpan(s, s + k, row_names[c], score, s * max_width + k, c)
            for s, k, c, score in zip(
                s_idx[lo:hi].tolist(), k_idx[lo:hi].tolist(), c_idx[lo:hi].tolist(), scores[lo:hi]
            )
        ]
        kept = greedy_search(candidates, bool(flat_values[b]), bool(multi_values[b]))
        if class_probs:  # after the greedy search: it does not read them, and fewer spans remain
            kept = [s._replace(class_probs=_top_classes(probs[b, s.start, s.end - s.start, : counts[b]], row_names))
                    for s in kept]
        result.append(kept)
    return result


def _span_grid(allowed_spans, batch: int, num_words: int, max_width: int) -> np.ndarray:
    """(B, W, K) mask of the allowed (start, end) spans; a None row allows every span."""
    rows = _per_row(allowed_spans, batch, "allowed_spans")
    grid = np.zeros((batch, num_words, max_width), bool)
    for b, spans in enumerate(rows):
        if spans is None:
            grid[b] = True
            continue
        for start, end in spans:
            if 0 <= start < num_words and 0 <= end - start < max_width:
                grid[b, start, end - start] = True
    return grid


def _top_classes(class_row: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """gliner's class probabilities of one span: its top `CLASS_PROBS_TOP` real classes, best first
    (ties: lower class slot first)."""
    top = np.argsort(-class_row, kind="stable")[:CLASS_PROBS_TOP]
    return {names[c]: float(class_row[c]) for c in top.tolist()}


def decode_relations(
    entities: Sequence[Sequence[EntitySpan]],
    entity_index,
    entity_mask,
    pair_mask,
    relation_logits,
    relation_names: Sequence[str] | Sequence[Sequence[str]],
    relation_threshold: float | Sequence[float],
    max_width: int,
    num_relations: int | Sequence[int] | None = None,
) -> list[list[Relation]]:
    """Decode relations between the decoded entities, as gliner's `SpanRelexDecoder._decode_relations`.

    Args:
        entities: per row, the decoded entity spans (`decode_entities` output).
        entity_index: (B, E) flat span index start * K + width of each model-selected entity.
        entity_mask: (B, E) real selected entities.
        pair_mask: (B, E, E) scored (head, tail) pairs; gliner's pair order is row-major over it.
        relation_logits: (B, E, E, R).
        relation_names: relation label names, shared or one list per row.
        relation_threshold: strict threshold, shared or per row (compared in double precision).
        max_width: K, the span-width dimension of the flat index.
        num_relations: real relation count per row (int or per row); None: len of the names.

    Returns:
        per row, `Relation(head, label, tail, score, class_index)` in pair order, then class order.
    """
    index = np.asarray(entity_index).astype(np.int64)
    emask = np.asarray(entity_mask).astype(bool)
    pmask = np.asarray(pair_mask).astype(bool) & emask[:, :, None] & emask[:, None, :]
    logits = np.asarray(relation_logits)
    batch = index.shape[0]
    names = _names_per_row(relation_names, batch, "relation_names")
    if num_relations is None:
        counts = [len(row) for row in names]
    else:
        counts = [int(n) for n in _per_row(num_relations, batch, "num_relations")]
    thresholds = [float(t) for t in _per_row(relation_threshold, batch, "relation_threshold")]

    result = []
    for b in range(batch):
        first: dict[tuple[int, int], int] = {}
        for i, span in enumerate(entities[b]):
            first.setdefault((span.start, span.end), i)
        starts, widths = index[b] // max_width, index[b] % max_width
        mapped = np.array(
            [first.get((int(s), int(s + w)), -1) if m else -1 for s, w, m in zip(starts, widths, emask[b])],
            dtype=np.int64,
        ).reshape(-1)
        heads, tails = np.nonzero(pmask[b])  # row-major pair order
        keep = (mapped[heads] >= 0) & (mapped[tails] >= 0) if len(heads) else np.zeros(0, bool)
        heads, tails = heads[keep], tails[keep]
        n_classes = min(counts[b], logits.shape[-1])
        rows = []
        if len(heads) and n_classes > 0:
            probs = sigmoid(logits[b, heads, tails, :n_classes]).astype(np.float64)  # exact float32 values
            pair_i, class_i = np.nonzero(probs > thresholds[b])  # pair order, then class order
            row_names = names[b]
            for p, c, score in zip(pair_i.tolist(), class_i.tolist(), probs[pair_i, class_i].tolist()):
                rows.append(Relation(int(mapped[heads[p]]), row_names[c], int(mapped[tails[p]]), score, c))
        result.append(rows)
    return result


def entities_to_dicts(
    spans: Sequence[EntitySpan], text: str, start_offsets: Sequence[int], end_offsets: Sequence[int]
) -> list[dict[str, Any]]:
    """One row's spans -> gliner's entity dicts {"start", "end", "text", "label", "score"} (chars),
    plus "class_probs" and the vectors when the spans carry them."""
    out = []
    for span in spans:
        start, end = start_offsets[span.start], end_offsets[span.end]
        entity = {"start": start, "end": end, "text": text[start:end], "label": span.label, "score": span.score}
        if span.class_probs is not None:
            entity["class_probs"] = span.class_probs
        entity.update(span.vectors or {})
        out.append(entity)
    return out


def relations_to_dicts(relations: Sequence[Relation], entity_dicts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row's relations -> gliner's relation dicts (head/tail with "entity_idx"), plus the
    vectors when the relations carry them."""

    def side(idx: int) -> dict[str, Any]:
        ent = entity_dicts[idx]
        return {"start": ent["start"], "end": ent["end"], "text": ent["text"], "type": ent["label"], "entity_idx": idx}

    out = []
    for rel in relations:
        if rel.head >= len(entity_dicts) or rel.tail >= len(entity_dicts):
            continue
        out.append({"head": side(rel.head), "tail": side(rel.tail), "relation": rel.label, "score": rel.score,
                    **(rel.vectors or {})})
    return out


def merge_windows(
    windows: Sequence[tuple[Sequence[EntitySpan], Sequence[Relation]]],
    flat_ner: bool,
    multi_label: bool,
    relation_names: Sequence[str],
) -> tuple[list[EntitySpan], list[Relation]]:
    """Merge the decoded results of overlapping windows of one text (spans in text word positions).

    A span found by several windows keeps its best score; the union is then resolved by the same
    greedy search as one window, so overlaps across windows follow the `flat_ner` / `multi_label`
    rules. Relations are re-attached by boundaries (to the first kept entity with the same
    start and end, as gliner maps model entities), keep their best score, are dropped with their
    head or tail, and are ordered by (head, tail, relation label order). Spans and relations
    keep what they carry (vectors: those of the window the kept one came from).
    """
    best: dict[tuple[int, int, str], EntitySpan] = {}
    for spans, _ in windows:
        for span in spans:
            key = (span.start, span.end, span.label)
            if key not in best or span.score > best[key].score:
                best[key] = span
    merged = greedy_search(list(best.values()), flat_ner, multi_label)
    first: dict[tuple[int, int], int] = {}
    for i, span in enumerate(merged):
        first.setdefault((span.start, span.end), i)
    relations: dict[tuple[int, str, int], Relation] = {}
    for spans, rels in windows:
        for rel in rels:
            head, tail = spans[rel.head], spans[rel.tail]
            h, t = first.get((head.start, head.end)), first.get((tail.start, tail.end))
            if h is None or t is None:
                continue
            key = (h, rel.label, t)
            if key not in relations or rel.score > relations[key].score:
                relations[key] = rel._replace(head=h, tail=t)
    order = {name: i for i, name in enumerate(relation_names)}
    return merged, sorted(relations.values(), key=lambda r: (r.head, r.tail, order[r.label]))
