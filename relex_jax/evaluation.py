"""Entity and relation extraction metrics (micro precision / recall / F1), and evaluation of a
`RelexModel` on `Example`s read with `relex_jax.data.readers`.

Matching (per text, gold and predicted items are compared as *sets*: an item listed twice, or
two relations whose argument indices differ but point at equal spans, count once):

- entities, strict: `(start, end, type)` equal; boundaries: `(start, end)` equal, type ignored.
- relations, strict: head span + head type + tail span + tail type + relation type equal;
  boundaries: head span + tail span + relation type equal (argument types ignored).
  Spans are word positions `(start, end_inclusive)`; a relation's arguments are looked up in the
  entity list of the same side (gold relations in the gold entities, predicted in predicted).

Counts are summed over texts (micro average): precision = tp / (tp + fp), recall = tp / (tp + fn),
F1 = 2PR / (P + R). A ratio whose denominator is 0 is 0: precision is 0 with no predictions,
recall is 0 with no gold, and F1 is 0 when P + R = 0 (so an empty gold set scored against no
predictions gives all zeros, not 1). `per_type` scores each type under strict matching: entity
types for entities, relation types for relations; a predicted item counts against its predicted
type, a missed gold item against its gold type.

Metric dictionaries (`prf`) are `{"precision", "recall", "f1", "tp", "fp", "fn"}`; the functions
here return plain dicts, lists, strings and numbers, so reports are JSON-serialisable as they are.

`gliner_evaluate` (`RelexModel.evaluate`) is gliner 0.2.29's relex `evaluate` on this machinery:
gliner-format records in, gliner's two (text, F1) pairs out (entities strict, relations boundaries).
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from relex_jax.data.labels import normalize_labels
from relex_jax.data.readers import Example, parse_gliner_record
from relex_jax.settings import InferenceSettings

__all__ = ["MODES", "entity_metrics", "evaluate", "gliner_evaluate", "gold_labels", "label_names", "prf",
           "relation_metrics", "score_examples"]

MODES = ("strict", "boundaries")


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """Precision, recall and F1 from counts (0 wherever a denominator is 0), with the counts."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def _counts(gold: Sequence[set], predicted: Sequence[set], type_of: Callable[[tuple], str] | None,
            types: Iterable[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Micro counts over texts, and per type (by `type_of(key)`) when `type_of` is given."""
    tp = fp = fn = 0
    per_type = {name: [0, 0, 0] for name in types}
    for g, p in zip(gold, predicted):
        hits, extra, missed = g & p, p - g, g - p
        tp, fp, fn = tp + len(hits), fp + len(extra), fn + len(missed)
        if type_of is not None:
            for slot, keys in enumerate((hits, extra, missed)):
                for key in keys:
                    per_type.setdefault(type_of(key), [0, 0, 0])[slot] += 1
    return prf(tp, fp, fn), {name: prf(*per_type[name]) for name in sorted(per_type)}


def _check_texts(what: str, *lists: Sequence) -> None:
    sizes = [len(x) for x in lists]
    if len(set(sizes)) > 1:
        raise ValueError(f"{what}: gold and predictions must have one list per text, got {sizes} lists")


def _span(entity, text: int, i: int, side: str) -> tuple[int, int, str]:
    """(start, end, label) from an entity given as a tuple whose first three items are those."""
    try:
        start, end, label = entity[0], entity[1], entity[2]
    except (TypeError, IndexError):
        raise ValueError(f"text {text}: {side} entity {i} ({entity!r}) is not a (start, end, label, ...) tuple") from None
    if not (isinstance(start, numbers.Integral) and isinstance(end, numbers.Integral)):
        raise ValueError(f"text {text}: {side} entity {i} ({entity!r}) has non-integer word positions")
    return int(start), int(end), label


def _entity_sets(entities: Sequence[Sequence], side: str) -> list[list[tuple[int, int, str]]]:
    return [[_span(e, t, i, side) for i, e in enumerate(row)] for t, row in enumerate(entities)]


def entity_metrics(gold: Sequence[Sequence], predicted: Sequence[Sequence], types: Iterable[str] = ()) -> dict[str, Any]:
    """Entity scores over texts.

    Args:
        gold, predicted: one list of entities per text; an entity is any tuple whose first three
            items are `(start, end_inclusive, type)`: an `Example.entities` triple, a
            `WordEntity` (its score is ignored), ...
        types: entity types to list under `per_type` even when neither side has them.

    Returns:
        {"strict": prf, "boundaries": prf, "per_type": {type: strict prf}} (types sorted).
    """
    _check_texts("entities", gold, predicted)
    gold_spans, pred_spans = _entity_sets(gold, "gold"), _entity_sets(predicted, "predicted")
    strict, per_type = _counts([set(row) for row in gold_spans], [set(row) for row in pred_spans],
                               lambda key: key[2], types)
    boundaries, _ = _counts([{s[:2] for s in row} for row in gold_spans], [{s[:2] for s in row} for row in pred_spans],
                            None, ())
    return {"strict": strict, "boundaries": boundaries, "per_type": per_type}


def _relation_keys(entities: Sequence[Sequence], relations: Sequence[Sequence], side: str) -> list[set]:
    """Per text, the strict keys (head start, head end, head type, tail start, tail end, tail type,
    relation type) of its relations."""
    keys = []
    for t, (row_entities, row_relations) in enumerate(zip(entities, relations)):
        spans = [_span(e, t, i, side) for i, e in enumerate(row_entities)]
        row = set()
        for i, relation in enumerate(row_relations):
            try:
                head, tail, label = relation[0], relation[1], relation[2]
            except (TypeError, IndexError):
                raise ValueError(f"text {t}: {side} relation {i} ({relation!r}) is not a (head, tail, label, ...) tuple") from None
            if not all(isinstance(x, numbers.Integral) and 0 <= x < len(spans) for x in (head, tail)):
                raise ValueError(
                    f"text {t}: {side} relation {i} ({relation!r}) indexes outside the text's {len(spans)} entities"
                )
            row.add((*spans[int(head)], *spans[int(tail)], label))
        keys.append(row)
    return keys


def relation_metrics(gold_entities: Sequence[Sequence], gold_relations: Sequence[Sequence],
                     predicted_entities: Sequence[Sequence], predicted_relations: Sequence[Sequence],
                     types: Iterable[str] = ()) -> dict[str, Any]:
    """Relation scores over texts.

    Args:
        gold_entities, predicted_entities: per text, entities as in `entity_metrics`.
        gold_relations, predicted_relations: per text, relations as tuples whose first three items
            are `(head, tail, type)`, head / tail indexing that side's entity list of the text:
            an `Example.relations` triple, a `WordRelation` (score ignored), ...
        types: relation types to list under `per_type` even when neither side has them.

    Returns:
        {"strict": prf, "boundaries": prf, "per_type": {relation type: strict prf}}.
    """
    _check_texts("relations", gold_entities, gold_relations, predicted_entities, predicted_relations)
    gold = _relation_keys(gold_entities, gold_relations, "gold")
    predicted = _relation_keys(predicted_entities, predicted_relations, "predicted")
    strict, per_type = _counts(gold, predicted, lambda key: key[6], types)

    def loose(rows):  # drop the argument types
        return [{(k[0], k[1], k[3], k[4], k[6]) for k in row} for row in rows]

    boundaries, _ = _counts(loose(gold), loose(predicted), None, ())
    return {"strict": strict, "boundaries": boundaries, "per_type": per_type}


def score_examples(examples: Sequence[Example], entities: Sequence[Sequence], relations: Sequence[Sequence],
                   entity_types: Iterable[str] = (), relation_types: Iterable[str] = ()) -> dict[str, Any]:
    """Score predictions (one entity list and one relation list per example, e.g. the output of
    `RelexModel.inference_words` on the examples' tokens) against the examples' gold.

    Returns {"entities": entity_metrics, "relations": relation_metrics}."""
    gold_entities = [e.entities for e in examples]
    return {
        "entities": entity_metrics(gold_entities, entities, entity_types),
        "relations": relation_metrics(gold_entities, [e.relations for e in examples], entities, relations,
                                      relation_types),
    }


def label_names(labels, what: str) -> list[str]:
    """Result names of one label set (a string, a list, or a {name: description} mapping)."""
    if labels is None:
        return []
    names = [labels] if isinstance(labels, str) else list(labels.keys() if isinstance(labels, Mapping) else labels)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be one label set for all examples (strings or a mapping), "
                            f"found a {type(name).__name__}")
    return names


def gold_labels(examples: Sequence[Example], entity_labels=None, relation_labels=None):
    """The label sets to ask for: those given, else the types of the examples' gold (sorted);
    no gold entity type to fall back on is an error."""
    if entity_labels is None:
        entity_labels = sorted({label for e in examples for _, _, label in e.entities})
        if not entity_labels:
            raise ValueError("the examples have no gold entities to take entity types from; pass entity_labels")
    if relation_labels is None:
        relation_labels = sorted({label for e in examples for _, _, label in e.relations})
    return entity_labels, relation_labels


def evaluate(model, examples: Iterable[Example], entity_labels=None, relation_labels=None,
             groups: Sequence | None = None, **options) -> dict[str, Any]:
    """Run `model` (a `RelexModel`) over the examples' own tokens (`inference_words`, no
    re-splitting) and score its entities and relations against their gold.

    Args:
        model: a `RelexModel`.
        examples: `Example`s; their `ner_labels` / `rel_labels` are not used (one label set for all).
        entity_labels, relation_labels: the types the model is asked for, in any form `inference`
            takes (a mapping's names are the types scored). Default: the entity / relation types
            present in the examples' gold, sorted; with no relation types, entities only.
        groups: one value per example (e.g. its CrossRE domain): the scores are also reported
            per value, from the same model run (keys are the values as strings, sorted).
        options: `InferenceSettings` fields (threshold, relation_threshold, batch_size,
            long_texts, window_size, ...), checked before the model runs.

    Every gold item counts, including those the model cannot predict: spans outside the text or
    wider than the model's `max_width`, spans cut off by `long_texts="truncate"`, types not in the
    label sets, and relations whose arguments are such spans are scored as missed (fn).

    Returns:
        {"entities": {"strict", "boundaries", "per_type"}, "relations": {same} (see
        `entity_metrics` / `relation_metrics`; `per_type` lists every requested type), "texts": n,
        "entity_types": [...], "relation_types": [...], "settings": {the `InferenceSettings`
        used}, "seconds": wall time of the model call, "texts_per_second": n / seconds}; with
        `groups`, also "groups": {value: {"texts", "entities", "relations"}}.
    """
    settings = InferenceSettings(**options)
    examples = list(examples)
    if not examples:
        raise ValueError("no examples to evaluate")
    if groups is not None and len(groups) != len(examples):
        raise ValueError(f"groups must hold one value per example ({len(examples)}), got {len(groups)}")
    entity_labels, relation_labels = gold_labels(examples, entity_labels, relation_labels)
    entity_types = label_names(entity_labels, "entity_labels")
    relation_types = label_names(relation_labels, "relation_labels")
    start = time.perf_counter()
    entities, relations = model.inference_words(
        [list(e.tokens) for e in examples], entity_labels, relation_labels or None, **dataclasses.asdict(settings)
    )
    seconds = time.perf_counter() - start
    report = score_examples(examples, entities, relations, entity_types, relation_types)
    report.update(
        texts=len(examples),
        entity_types=entity_types,
        relation_types=relation_types,
        settings=settings.to_dict(),
        seconds=seconds,
        texts_per_second=len(examples) / seconds if seconds > 0 else 0.0,
    )
    if groups is not None:
        members: dict[str, list[int]] = {}
        for i, value in enumerate(groups):
            members.setdefault(str(value), []).append(i)
        report["groups"] = {
            value: {"texts": len(rows), **score_examples([examples[i] for i in rows], [entities[i] for i in rows],
                                                         [relations[i] for i in rows], entity_types, relation_types)}
            for value, rows in sorted(members.items())
        }
    return report


def _record_types(given, examples: Sequence[Example], kind: str) -> list[dict[str, str]]:
    """Per record, the types the model is asked for as {name: prompt}: `given` (any form
    `inference` takes, shared or one set per record), or else the record's own `ner_labels` /
    `rel_labels`, or else the types of its gold items in order of appearance."""
    what = "entity_types" if kind == "entity" else "relation_types"
    if given is not None:
        return [dict(zip(s.names, s.prompts)) for s in normalize_labels(given, len(examples), what, kind == "entity")]
    out = []
    for ex in examples:
        fixed = ex.ner_labels if kind == "entity" else ex.rel_labels
        items = ex.entities if kind == "entity" else ex.relations
        names = fixed if fixed is not None else dict.fromkeys(item[-1] for item in items)
        out.append({name: name for name in names})
    return out


def _gliner_line(scores: Mapping[str, Any]) -> str:
    """gliner's evaluator text (gliner/evaluation/evaluator.py, `BaseEvaluator.evaluate`)."""
    return f"P: {scores['precision']:.2%}\tR: {scores['recall']:.2%}\tF1: {scores['f1']:.2%}\n"


def gliner_evaluate(model, test_data: Sequence[Mapping], flat_ner: bool = False, multi_label: bool = False,
                    threshold: float = 0.5, adjacency_threshold: float | None = None,
                    relation_threshold: float | None = None, batch_size: int = 12, entity_types=None,
                    relation_types=None, **options) -> tuple[tuple[str, float], tuple[str, float]]:
    """gliner 0.2.29's `UniEncoderSpanRelexGLiNER.evaluate`, with its parameters, defaults and
    return value, on `model` (a `RelexModel`) through `inference_words` (the records' own words).

    Args:
        test_data: gliner training-format records ({"tokenized_text", "ner", "relations",
            "ner_labels"?, "rel_labels"?, ...}), read with `parse_gliner_record` (a malformed
            record raises `MalformedRecord` naming `test_data[i]`).
        flat_ner, multi_label, threshold, adjacency_threshold, relation_threshold, batch_size:
            as `inference` (gliner's defaults here: nested spans, batches of 12).
        entity_types, relation_types: the types asked for, in any form `inference` takes (one set
            for all records or one per record). None: per record, its `ner_labels` / `rel_labels`,
            else the types of its own gold entities / relations. A record left with no entity
            type is not run (no predictions; its gold relations count as missed).
        options: relex-jax's own `inference_words` options (`long_texts`, `window_size`, ...).

    Returns:
        ((entity_text, entity_f1), (relation_text, relation_f1)), the texts as gliner prints
        them ("P: 50.00%\tR: 40.00%\tF1: 44.44%\n"). Entities match on (start, end, type), relations
        on (head span, tail span, relation type) with the argument types ignored, per record as
        sets, micro-averaged (`score_examples`' "strict" and "boundaries"); gold entities the
        model cannot predict (outside the text, wider than `max_width`) count as missed, as in
        gliner.
    """
    if isinstance(test_data, Mapping):
        raise TypeError("test_data must be a list of gliner records, got a single record")
    examples = [parse_gliner_record(record, f"test_data[{i}]") for i, record in enumerate(test_data)]
    entity_sets = _record_types(entity_types, examples, "entity")
    relation_sets = _record_types(relation_types, examples, "relation")
    asked = [i for i, types in enumerate(entity_sets) if types]
    entities: list[list] = [[] for _ in examples]
    relations: list[list] = [[] for _ in examples]
    if asked:
        found = model.inference_words(
            [list(examples[i].tokens) for i in asked], [entity_sets[i] for i in asked],
            [relation_sets[i] for i in asked], flat_ner=flat_ner, threshold=threshold,
            adjacency_threshold=adjacency_threshold, relation_threshold=relation_threshold, multi_label=multi_label,
            batch_size=batch_size, **options,
        )
        for i, text_entities, text_relations in zip(asked, *found):
            entities[i], relations[i] = text_entities, text_relations
    report = score_examples(examples, entities, relations)
    ner, rel = report["entities"]["strict"], report["relations"]["boundaries"]
    return (_gliner_line(ner), ner["f1"]), (_gliner_line(rel), rel["f1"])
