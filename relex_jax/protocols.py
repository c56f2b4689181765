"""Evaluation protocols on records of the ../shared/data JSON Lines format (README "Evaluation
protocols"): what is supplied to the model and what is counted, on top of the metrics of
`relex_jax.evaluation`.

- `joint`: entities and relations extracted from the words alone (`evaluation.evaluate`),
  optionally per value of a top-level record field (`group_by`, e.g. CrossRE's "domain").
- `given-entities`: the gold entity spans are given (`input_spans`); relations are scored as a
  thresholded extraction and as a forced choice among `m` offered labels (relation
  classification, the FewRel setting), with two trivial baselines.
- `document`: Re-DocRED-style documents whose entities are clusters of mentions; predicted
  mentions map to gold clusters by exact span and relations count once per (head cluster, tail
  cluster, label).

Each protocol is planned first (`plan`: records parsed, types and options checked, no model
needed, so the command line refuses bad input before a model loads), then run (`run`).
Records are read as dicts (`read_records`) because protocols need fields that `Example` drops
(`domain`, `mentions`); the `Example` side goes through `parse_jsonl_record`. Words that are
only whitespace (FewRel and DocRED have a few hundred) have no tokens, which the model refuses,
so they are replaced by `BLANK_WORD` (word positions unchanged; the count is reported).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relex_jax.data.readers import BLANK_WORD, Example, MalformedRecord, parse_jsonl_record, replace_blank_words
from relex_jax.evaluation import (
    entity_metrics,
    evaluate,
    gold_labels,
    label_names,
    prf,
    relation_metrics,
)
from relex_jax.settings import InferenceSettings

__all__ = ["BLANK_WORD", "GIVEN_ENTITY_THRESHOLD", "PROTOCOLS", "Plan", "plan", "read_records", "run"]

logger = logging.getLogger("relex_jax")

PROTOCOLS = ("joint", "given-entities", "document")
# Entity threshold of the given-entities runs: the given spans are the relation stage's entities
# (`relate_input_spans`), and decoding them under threshold 0 (strict) returns every one of them,
# whatever the model thinks of it.
GIVEN_ENTITY_THRESHOLD = 0.0
# Which protocol reads which protocol option (the rest must stay unset).
PROTOCOL_OPTIONS = {
    "joint": ("group_by",),
    "given-entities": ("offered", "draws", "seed", "per_label"),
    "document": ("given_entities", "label_group"),
}
DEFAULT_DRAWS = 5


def read_records(path) -> list[dict]:
    """The JSON objects of a JSON Lines file, in file order (blank lines skipped); a line that is
    not a JSON object raises `MalformedRecord` naming the file and line."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as bad:
                raise MalformedRecord(f"{path}: line {number}: not valid JSON ({bad.msg})") from None
            if not isinstance(record, dict):
                raise MalformedRecord(f"{path}: line {number}: a record must be a JSON object")
            records.append(record)
    return records


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked protocol run: the parsed records and everything that does not need the model."""

    protocol: str
    examples: list[Example]
    entity_labels: Any  # as `inference` takes them; names are the scored types
    relation_labels: Any
    entity_types: list[str]
    relation_types: list[str]
    options: dict[str, Any]  # the protocol's own options, defaults filled in
    blank_words: int  # whitespace-only words replaced by BLANK_WORD
    groups: list[str] | None = None  # joint + group_by: one value per example
    documents: list[_Document] | None = None  # document protocol
    dropped: int = 0  # records left out by per_label


@dataclasses.dataclass(frozen=True)
class _Document:
    """Gold of one document: mentions (start, end_inclusive, type), the cluster of each mention
    span (the first cluster listing it), and the deduplicated (head cluster, tail cluster, label)."""

    mentions: list[tuple[int, int, str]]
    cluster_of: dict[tuple[int, int], int]
    clusters: int
    triples: set[tuple[int, int, str]]


def plan(protocol: str, records: Sequence[Mapping], entity_labels=None, relation_labels=None, *,
         group_by: str | None = None, offered: Sequence[int] | None = None, draws: int | None = None,
         seed: int | None = None, per_label: int | None = None, given_entities: bool | None = None,
         label_group: int | None = None) -> Plan:
    """Check a protocol run before any model loads.

    Args:
        protocol: one of `PROTOCOLS`.
        records: ../shared/data JSON Lines records (dicts), e.g. `read_records(path)`.
        entity_labels, relation_labels: the types asked for, one set for all records in any form
            `inference` takes ({type: prompt} mappings: results are named by the keys). Default:
            the types of the gold (sorted; for documents the mention types).
        group_by (joint): a top-level record field; scores are reported per value too.
        offered (given-entities): sizes m of the offered relation label sets (default: all types,
            once); `draws` (default 5) seeded (`seed`, default 0) subsets of each size below the
            number of types. `per_label`: keep at most the first N records per gold relation label.
        given_entities (document): supply every gold mention as an input span.
        label_group (document): offer the relation labels in groups of K, one run per group.

    Raises:
        ValueError (or `MalformedRecord`) with a one-line message for anything that cannot run.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    given = dict(group_by=group_by, offered=offered, draws=draws, seed=seed, per_label=per_label,
                 given_entities=given_entities or None, label_group=label_group)
    for name, value in given.items():
        if value is not None and name not in PROTOCOL_OPTIONS[protocol]:
            users = next(p for p, names in PROTOCOL_OPTIONS.items() if name in names)
            raise ValueError(f"{name} is an option of the {users} protocol, not of {protocol}")
    for name in ("draws", "per_label", "label_group"):
        value = given[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    records = list(records)
    dropped = 0
    if per_label is not None:
        kept = _first_per_label(records, per_label)
        records, dropped = kept, len(records) - len(kept)
    if not records:
        raise ValueError("no records to evaluate")
    blank = sum(1 for r in records for t in (r.get("tokens") if isinstance(r.get("tokens"), list) else ())
                if isinstance(t, str) and not t.strip())
    examples = [parse_jsonl_record({**r, "tokens": replace_blank_words(r.get("tokens"))}, f"record {i}")
                for i, r in enumerate(records)]
    documents = [_document(r, ex, i) for i, (r, ex) in enumerate(zip(records, examples))] if protocol == "document" else None
    if entity_labels is None and documents is not None:  # documents: the mentions' types
        entity_labels = sorted({m[2] for d in documents for m in d.mentions}) or None
    entity_labels, relation_labels = gold_labels(examples, entity_labels, relation_labels)
    entity_types = label_names(entity_labels, "entity_labels")
    relation_types = label_names(relation_labels, "relation_labels")
    if protocol != "joint" and not relation_types:
        raise ValueError(f"the {protocol} protocol scores relations: the records have none; give relation labels")
    options: dict[str, Any] = {}
    groups = None
    if protocol == "joint" and group_by is not None:
        missing = next((i for i, r in enumerate(records) if group_by not in r), None)
        if missing is not None:
            raise ValueError(f"record {missing} has no field {group_by!r} to group by")
        groups = [str(r[group_by]) for r in records]
        options["group_by"] = group_by
    if protocol == "given-entities":
        sizes = list(offered) if offered is not None else [len(relation_types)]
        for m in sizes:
            if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= len(relation_types):
                raise ValueError(f"offered label set size {m!r} must be between 1 and the {len(relation_types)} "
                                 "relation types")
        options.update(offered=sizes, draws=DEFAULT_DRAWS if draws is None else draws,
                       seed=0 if seed is None else seed, per_label=per_label)
    if protocol == "document":
        options.update(given_entities=bool(given_entities), label_group=label_group)
    return Plan(protocol, examples, entity_labels, relation_labels, entity_types, relation_types, options, blank,
                groups, documents, dropped)


def run(model, plan: Plan, **options) -> dict[str, Any]:
    """Run a planned protocol with `model` (a `RelexModel`, or anything with its
    `inference_words`); `options` are `InferenceSettings` fields. Returns a JSON-serialisable
    report with "protocol", the protocol's options and scores (README "Evaluation protocols")."""
    settings = InferenceSettings(**options)
    head = {"protocol": plan.protocol, **plan.options, "blank_words_replaced": plan.blank_words}
    if plan.protocol == "joint":
        report = evaluate(model, plan.examples, plan.entity_labels, plan.relation_labels, groups=plan.groups,
                          **dataclasses.asdict(settings))
    elif plan.protocol == "given-entities":
        report = _given_entities(model, plan, settings)
    else:
        report = _documents(model, plan, settings)
    return {**head, **report}


def _first_per_label(records: list[Mapping], limit: int) -> list[Mapping]:
    """Records in file order, each kept while one of its gold relation labels has been kept fewer
    than `limit` times; records without relations are left out (they have no label)."""
    counts: dict[str, int] = {}
    kept = []
    for record in records:
        labels = {r.get("type") for r in record.get("relations") or () if isinstance(r, Mapping)}
        if any(counts.get(label, 0) < limit for label in labels):
            kept.append(record)
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
    return kept


def _subset(labels, names: Sequence[str]):
    """The part of a label set (a list or a {name: prompt} mapping) named by `names`, in `names`' order."""
    if isinstance(labels, Mapping):
        return {name: labels[name] for name in names}
    return list(names)


# ---------------------------------------------------------------------------------------------
# given-entities


def _given_entities(model, plan: Plan, settings: InferenceSettings) -> dict[str, Any]:
    """Every offered label set is one model run on the texts with an evaluated pair (see
    `_given_draw`); per size m the draws' mean and sample standard deviation."""
    types, cutoff = plan.relation_types, settings.relation_cutoff
    run_settings = dataclasses.replace(settings, threshold=GIVEN_ENTITY_THRESHOLD, relation_threshold=0.0,
                                       flat_ner=False, multi_label=False, relate_input_spans=True)
    rng = np.random.default_rng(plan.options["seed"])
    sizes, start = [], time.perf_counter()
    for m in plan.options["offered"]:
        if m == len(types):
            subsets = [list(types)]
        else:
            subsets = [[types[i] for i in sorted(rng.choice(len(types), m, replace=False).tolist())]
                       for _ in range(plan.options["draws"])]
        draws = [_given_draw(model, plan, subset, run_settings, cutoff) for subset in subsets]
        sizes.append({"m": m, **_summary(draws), "draws": draws})
    return {"texts": len(plan.examples), "records_dropped_by_per_label": plan.dropped,
            "entity_types": plan.entity_types, "relation_types": types, "relation_threshold": float(cutoff),
            "entity_threshold": GIVEN_ENTITY_THRESHOLD, "settings": run_settings.to_dict(),
            "seconds": time.perf_counter() - start, "offered_sizes": sizes}


def _gold_spans(example: Example) -> list[tuple[int, int]]:
    """The example's distinct gold entity spans inside its text, in first-listed order."""
    n = len(example.tokens)
    return list(dict.fromkeys((s, e) for s, e, _ in example.entities if 0 <= s <= e < n))


def _gold_pairs(example: Example) -> dict[tuple[tuple[int, int], tuple[int, int]], set[str]]:
    """(head span, tail span) -> the gold relation labels of that pair."""
    pairs: dict = {}
    for head, tail, label in example.relations:
        h, t = example.entities[head][:2], example.entities[tail][:2]
        pairs.setdefault((h, t), set()).add(label)
    return pairs


def _given_draw(model, plan: Plan, subset: list[str], settings: InferenceSettings, cutoff: float) -> dict[str, Any]:
    """One offered label set: the pairs whose gold labels all lie in it are evaluated; the texts
    holding one run once with the gold spans given and every (pair, label) score returned."""
    evaluated = []  # (text, pair, gold labels)
    offered = set(subset)
    for i, example in enumerate(plan.examples):
        for pair, labels in _gold_pairs(example).items():
            if labels <= offered:
                evaluated.append((i, pair, labels))
    out: dict[str, Any] = {"labels": subset, "pairs": len(evaluated)}
    if not evaluated:
        return {**out, "texts": 0}
    texts = list(dict.fromkeys(i for i, _, _ in evaluated))
    spans = [_gold_spans(plan.examples[i]) for i in texts]
    entities, relations = model.inference_words(
        [list(plan.examples[i].tokens) for i in texts], plan.entity_labels, _subset(plan.relation_labels, subset),
        input_spans=spans, **dataclasses.asdict(settings))
    scores: dict[int, dict] = {}  # text -> (head span, tail span) -> {label: score}
    missing = 0
    for i, given, ents, rels in zip(texts, spans, entities, relations):
        missing += len(set(given) - {e[:2] for e in ents})
        table = scores.setdefault(i, {})
        for rel in rels:
            table.setdefault((ents[rel.head][:2], ents[rel.tail][:2]), {})[rel.label] = rel.score
    if missing:
        logger.warning("%d given entity span(s) did not come back from the model (wider than max_width, crossing "
                       "another given span, or a probability of exactly 0); their pairs have no scores", missing)
    golds, choices = [], []
    for i, pair, labels in evaluated:
        table = scores[i].get(pair, {})
        golds.append(labels)
        choices.append(max(subset, key=lambda label: table.get(label, -1.0)) if table else None)
    counts = {label: sum(label in g for g in golds) for label in subset}
    frequent = max(subset, key=lambda label: counts[label])  # ties: the first offered
    baseline = _choice_metrics(golds, [frequent] * len(golds), subset)
    return {
        **out,
        "texts": len(texts),
        "given_spans_missing": missing,
        "pairs_without_scores": choices.count(None),
        "forced_choice": _choice_metrics(golds, choices, subset),
        "extraction": _extraction(plan, texts, spans, entities, relations, offered, cutoff, subset),
        "baselines": {
            "random": {"accuracy": sum(len(g) for g in golds) / len(golds) / len(subset)},
            "most_frequent": {"label": frequent, "accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"]},
        },
    }


def _choice_metrics(golds: Sequence[set[str]], choices: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Forced-choice scores: accuracy (the choice is one of the pair's gold labels), per offered
    label P/R/F1 over the evaluated pairs (a pair counts tp for its choice when right, fp for it
    when wrong, and fn for every gold label not chosen), their macro F1 (mean over all offered
    labels: one with no gold pair and no choice has F1 0 and still counts) and micro P/R/F1."""
    per_label = {}
    for label in labels:
        tp = sum(c == label and label in g for g, c in zip(golds, choices))
        fp = sum(c == label and label not in g for g, c in zip(golds, choices))
        fn = sum(label in g and c != label for g, c in zip(golds, choices))
        per_label[label] = prf(tp, fp, fn)
    micro = prf(*(sum(m[k] for m in per_label.values()) for k in ("tp", "fp", "fn")))
    return {
        "accuracy": sum(c in g for g, c in zip(golds, choices)) / len(golds),
        "macro_f1": sum(m["f1"] for m in per_label.values()) / len(labels),
        "micro": micro,
        "per_label": per_label,
    }


def _extraction(plan: Plan, texts, spans, entities, relations, offered: set[str], cutoff: float,
                subset: list[str]) -> dict[str, Any]:
    """Thresholded extraction on the run texts: predicted (head span, tail span, label) with a
    score above `cutoff` (strict, as the decoder) against the gold triples of offered labels;
    entity types are ignored (the spans are given), so every span gets the same type."""
    gold_ents, gold_rels, pred_ents, pred_rels = [], [], [], []
    for i, given, ents, rels in zip(texts, spans, entities, relations):
        example = plan.examples[i]
        index = {span: k for k, span in enumerate(given)}
        gold_ents.append([(s, e, "") for s, e in given])
        gold_rels.append([(index[example.entities[h][:2]], index[example.entities[t][:2]], label)
                          for h, t, label in example.relations
                          if label in offered and example.entities[h][:2] in index and example.entities[t][:2] in index])
        pred_ents.append([(e[0], e[1], "") for e in ents])
        pred_rels.append([r for r in rels if r.score > cutoff])
    scores = relation_metrics(gold_ents, gold_rels, pred_ents, pred_rels, subset)
    return {"micro": scores["boundaries"], "per_type": scores["per_type"]}


SUMMARY_KEYS = {
    "accuracy": ("forced_choice", "accuracy"),
    "macro_f1": ("forced_choice", "macro_f1"),
    "micro_f1": ("forced_choice", "micro", "f1"),
    "extraction_f1": ("extraction", "micro", "f1"),
    "random_accuracy": ("baselines", "random", "accuracy"),
    "most_frequent_accuracy": ("baselines", "most_frequent", "accuracy"),
    "most_frequent_macro_f1": ("baselines", "most_frequent", "macro_f1"),
}


def _summary(draws: list[dict]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one draw) over the draws that had pairs."""
    scored = [d for d in draws if d["pairs"]]
    mean, sd = {}, {}
    for name, path in SUMMARY_KEYS.items():
        values = []
        for d in scored:
            value = d
            for key in path:
                value = value[key]
            values.append(value)
        mean[name] = float(np.mean(values)) if values else None
        sd[name] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return {"draws_with_pairs": len(scored), "mean": mean, "sd": sd}


# ---------------------------------------------------------------------------------------------
# document


def _mention_span(item, where: str) -> tuple[int, int]:
    """A mention as {"start", "end" (exclusive), ...} (Re-DocRED) or [start, end_exclusive]
    (FewRel) -> (start, end_inclusive)."""
    if isinstance(item, Mapping):
        start, end = item.get("start"), item.get("end")
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        start, end = item
    else:
        raise MalformedRecord(f"{where}: a mention is {{'start', 'end'}} or [start, end], got {item!r}")
    if not (type(start) is int and type(end) is int and 0 <= start < end):
        raise MalformedRecord(f"{where}: mention {item!r} needs integer start < end (end exclusive)")
    return start, end - 1


def _document(record: Mapping, example: Example, i: int) -> _Document:
    """A record's clusters: each entity's `mentions` (its own span when it has none), typed by the
    mention's "type" or else the entity's; gold relations as cluster triples, deduplicated."""
    mentions, cluster_of = [], {}
    for c, entity in enumerate(record["entities"]):
        items = entity.get("mentions")
        spans = ([(_mention_span(m, f"record {i}: entity {c}"), m) for m in items] if items
                 else [(example.entities[c][:2], entity)])
        for (start, end), item in spans:
            kind = item.get("type", entity["type"]) if isinstance(item, Mapping) else entity["type"]
            mentions.append((start, end, kind))
            cluster_of.setdefault((start, end), c)
    triples = {(h, t, label) for h, t, label in example.relations}
    return _Document(list(dict.fromkeys(mentions)), cluster_of, len(record["entities"]), triples)


def _label_groups(names: list[str], size: int | None) -> list[list[str]]:
    if size is None:
        return [names]
    return [names[i:i + size] for i in range(0, len(names), size)]


def _documents(model, plan: Plan, settings: InferenceSettings) -> dict[str, Any]:
    """One run per relation label group; entities (mention level) from the first group's run;
    relations mapped to clusters and unioned over groups (see README)."""
    docs, given = plan.documents, plan.options["given_entities"]
    cutoff = settings.relation_cutoff
    if given:
        settings = dataclasses.replace(settings, threshold=GIVEN_ENTITY_THRESHOLD, relation_threshold=cutoff,
                                       flat_ner=False, multi_label=False, relate_input_spans=True)
    words = [list(e.tokens) for e in plan.examples]
    spans = [list(dict.fromkeys(m[:2] for m in d.mentions if m[1] < len(w))) for d, w in zip(docs, words)] if given else None
    groups = _label_groups(plan.relation_types, plan.options["label_group"])
    predicted: list[set] = [set() for _ in docs]
    pseudo: list[dict] = [{} for _ in docs]  # per document: span -> pseudo-entity id
    entities = None
    start = time.perf_counter()
    for g, group in enumerate(groups):
        try:
            ents, rels = model.inference_words(words, plan.entity_labels, _subset(plan.relation_labels, group),
                                               input_spans=spans, **dataclasses.asdict(settings))
        except ValueError as exc:
            if "positions stop at" in str(exc):
                raise ValueError(f"{exc}; or offer the {len(plan.relation_types)} relation labels in smaller "
                                 f"groups (label_group, now {plan.options['label_group']})") from None
            raise
        if g == 0:
            entities = ents
        for d, doc, text_ents, text_rels in zip(range(len(docs)), docs, ents, rels):
            for rel in text_rels:
                head, tail = (_cluster(doc, pseudo[d], text_ents[k][:2]) for k in (rel.head, rel.tail))
                predicted[d].add((head, tail, rel.label))
    seconds = time.perf_counter() - start
    # relation_metrics compares (head, tail, label) per document as sets; clusters and pseudo-entities
    # are given as one-word "entities" at their id, so equal ids mean the same cluster on both sides
    sizes = [doc.clusters + len(p) for doc, p in zip(docs, pseudo)]
    ids = [[(k, k, "") for k in range(n)] for n in sizes]
    relations = relation_metrics(ids, [sorted(d.triples) for d in docs], ids, [sorted(p) for p in predicted],
                                 plan.relation_types)
    return {
        "documents": len(docs),
        "given_entities": given,
        "entity_types": plan.entity_types,
        "relation_types": plan.relation_types,
        "label_groups": groups,
        "entities": entity_metrics([d.mentions for d in docs], entities, plan.entity_types),
        "relations": {"micro": relations["strict"], "per_type": relations["per_type"]},
        "pseudo_entities": sum(map(len, pseudo)),
        "settings": settings.to_dict(),
        "seconds": seconds,
    }


def _cluster(doc: _Document, pseudo: dict, span: tuple[int, int]) -> int:
    """The id of the gold cluster with a mention at exactly `span`, else of the span's own
    pseudo-entity (ids after the gold clusters, one per distinct unmatched span)."""
    if span in doc.cluster_of:
        return doc.cluster_of[span]
    return pseudo.setdefault(span, doc.clusters + len(pseudo))
