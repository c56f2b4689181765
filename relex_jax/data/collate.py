"""Collation: training examples into one padded batch with gold targets.

`collate` turns a list of examples into one padded training batch as gliner's
`RelationExtractionSpanProcessor.collate_raw_batch` + `collate_fn(prepare_labels=True)` does
(spec §13.2, §13.3, §2.7): augmentation, in-batch negative types, shuffled prompt order, type cap,
gold entity labels, and relation targets (all pairs, or sampled pairs for adjacency heads). Every
random draw comes from the `random.Random` passed in, call for call in gliner's order, so with
`type_order="set"` and Python's global `random` seeded alike the batch equals gliner's. Each
random feature can be switched off (`CollateConfig.deterministic()`); then no RNG is needed.

Target layouts (`TrainingBatch`), B rows:

- `entity_labels` (B, W, K, C) float32: gliner's `labels` (B, S = W*K, C) on our span grid, flat
  row i = l*K + k <-> [l, k] (start l, width k+1). Multi-hot over classes; class id c+1 is
  channel c; 0 outside the text and in padded words / classes.
- the gold entities taking part in relations, as gliner selects them in training
  (`labels.max(-1) == 1`): `entity_index` (B, E) their flat span indices l*K+k in increasing
  order (= our `RelexModule` packing order), `entity_mask` (B, E).
- `relation_labels` (B, E, E, R) float32 and `pair_mask` (B, E, E) bool on the model's (E, E)
  pair grid: cell (i, j) is the pair head = i-th gold entity, tail = j-th. `pair_mask` marks the
  pairs gliner scores in training: all i != j among real entities without an adjacency head
  (`relations_layer == "none"`), the sampled pairs (positives, reversed positives and random
  negatives) with one. gliner's `rel_matrix` rows are exactly the `pair_mask` cells in row-major
  order (one exception below).
- `adjacency` (B, E, E) float32 (adjacency heads only): gliner's `adj_matrix`, 1 on every
  sampled pair, padded to E.
- `gliner` (with `gliner_forms=True`): gliner's own arrays, unpadded (`span_idx`, `span_mask`,
  `labels`, `text_lengths`, `adj_matrix`, `rel_matrix`, the inputs, the class mappings).

Alignment (spec §2.7): gliner numbers entities for relations by counting every in-text,
at-most-K-wide gold entity in sorted order, including duplicates of one span and entities whose
label is not in the batch's entity types, while the model packs distinct labelled spans. With
`relation_alignment="gliner"` (default) targets reproduce that numbering exactly (so they can
point at the wrong pair when the two differ, as in gliner); `"span"` maps each relation to the
grid cell of its head and tail spans instead (relations touching an unlabelled span are dropped).
Self-relations with an adjacency head: gliner adds them as sampled pairs (adjacency diagonal and a
`rel_matrix` row) although its pair builder never scores i == i, which shifts its later rows; the
grid keeps them out of `pair_mask` / `relation_labels`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from relex_jax.data.processor import Batch, _bucket, build_batch
from relex_jax.data.readers import Example

log = logging.getLogger(__name__)

# The padded dimensions `collate` can bucket: tokens, words, entity types, relation types, gold entities.
BUCKET_KEYS = ("tokens", "words", "entities", "relations", "gold_entities")


@dataclasses.dataclass(frozen=True)
class CollateConfig:
    """How `collate` builds batches. Defaults are gliner's (config and `create_relation_labels`).

    Randomness (gliner's, each can be switched off):
    - `augment_data_prob` > 0: type-dropping augmentation (spec §13.3) per example;
    - `max_neg_type_ratio` > 0: in-batch negative types, up to ratio x #annotations per text;
    - `shuffle_types`: random prompt order (off: order of first appearance in the text's
      annotations, then negatives). Texts with fixed `ner_labels` / `rel_labels` are never shuffled;
    - `random_negative_pairs` (adjacency heads): random negative pairs, `negative_pair_ratio` x
      #positives of them (a (low, high) range draws the ratio per text).
    `type_order`: gliner de-duplicates types through a Python `set`, whose order depends on the
    process's string hashing (PYTHONHASHSEED). "set" reproduces that order (identical batches to
    gliner in one process, not reproducible across processes); "sorted" sorts first, so a seed
    gives the same batch in every process (draws are made at the same points, but which type
    gets which draw differs from gliner, so the batches differ from gliner's).
    """

    max_width: int
    ent_token: str = "<<ENT>>"
    sep_token: str = "<<SEP>>"
    rel_token: str = "<<REL>>"
    max_len: int = 384
    pooling: str = "first"
    embed_ent_token: bool = True
    embed_rel_token: bool = True
    pad_id: int = 0
    adjacency: bool = False  # an adjacency head: sampled pairs, adjacency targets
    max_types: int = 25
    max_neg_type_ratio: int = 1
    sampled_negative_types: int = 100
    shuffle_types: bool = True
    type_order: Literal["sorted", "set"] = "sorted"
    augment_data_prob: float = 0.5
    augment_ent_drop_prob: tuple[float, float] = (0.0, 1.0)
    augment_rel_drop_prob: tuple[float, float] = (0.0, 0.3)
    augment_add_other_prob: float = 0.5
    other_label: str = "other"
    negative_pair_ratio: float | tuple[float, float] = (1.0, 10.0)
    reversed_negative_pairs: bool = True
    random_negative_pairs: bool = True
    relation_alignment: Literal["gliner", "span"] = "gliner"

    def __post_init__(self):
        if self.type_order not in ("sorted", "set"):
            raise ValueError(f"type_order must be 'sorted' or 'set', got {self.type_order!r}")
        if self.relation_alignment not in ("gliner", "span"):
            raise ValueError(f"relation_alignment must be 'gliner' or 'span', got {self.relation_alignment!r}")
        if self.max_width < 1 or self.max_len < 1:
            raise ValueError("max_width and max_len must be positive")

    @classmethod
    def from_relex_config(cls, config, **overrides) -> "CollateConfig":
        """From a `RelexConfig`; gliner's training fields (max_types, max_neg_type_ratio,
        augment_*) come from its `extra` (what gliner_config.json holds), else gliner's defaults."""
        extra = dict(config.extra)
        fields = dict(
            max_width=config.max_width, ent_token=config.ent_token, sep_token=config.sep_token,
            rel_token=config.rel_token, max_len=config.max_len, pooling=config.subtoken_pooling,
            embed_ent_token=config.embed_ent_token, embed_rel_token=config.embed_rel_token,
            pad_id=config.encoder.pad_token_id, adjacency=config.has_adjacency_head,
        )
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for name in ("max_types", "max_neg_type_ratio", "augment_data_prob", "augment_add_other_prob"):
            fields[name] = type(defaults[name])(extra.get(name, defaults[name]))
        for name in ("augment_ent_drop_prob", "augment_rel_drop_prob"):
            fields[name] = tuple(extra.get(name, defaults[name]))
        fields.update(overrides)
        return cls(**fields)

    def deterministic(self) -> "CollateConfig":
        """The same config with every random feature off (no RNG needed)."""
        return dataclasses.replace(
            self, augment_data_prob=0.0, max_neg_type_ratio=0, shuffle_types=False, random_negative_pairs=False
        )

    def replace(self, **changes) -> "CollateConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class TrainingBatch:
    """One collated training batch (numpy). Layouts: see the module docstring."""

    inputs: Batch  # model inputs, padded to the buckets
    entity_labels: np.ndarray  # (B, W, K, C) float32
    entity_index: np.ndarray  # (B, E) int32 flat span index l*K+k of each gold entity
    entity_mask: np.ndarray  # (B, E) bool
    relation_labels: np.ndarray  # (B, E, E, R) float32
    pair_mask: np.ndarray  # (B, E, E) bool: pairs in the relation loss
    adjacency: np.ndarray | None  # (B, E, E) float32 gold adjacency (adjacency heads only)
    entity_types: list[list[str]]  # per row; class id c+1 = channel c
    relation_types: list[list[str]]
    gliner: dict[str, Any] | None = None  # gliner's raw arrays (gliner_forms=True)


class _NoRandom:
    """Stands in for the RNG when no random feature is on. gliner still draws its in-batch
    negative types then (and ignores them); here that draw takes the first k, nothing else may
    be drawn."""

    def sample(self, population, k):
        return list(population)[:k]

    def __getattr__(self, name):
        raise RuntimeError(f"collate needed random.{name} but no rng was given")


@dataclasses.dataclass
class _Row:
    """One example through collation: annotations after augmentation, its types, its targets."""

    example: Example
    entities: list
    relations: list
    dropped_entity_types: set = dataclasses.field(default_factory=set)
    dropped_relation_types: set = dataclasses.field(default_factory=set)
    entity_types: list = dataclasses.field(default_factory=list)
    relation_types: list = dataclasses.field(default_factory=list)


def _ordered(items: set, order: str) -> list:
    return list(items) if order == "set" else sorted(items)


def _negative_types(rows: Sequence[_Row], key: str, cfg: CollateConfig, rng) -> list[str]:
    """gliner's `get_negatives`: a random sample of the batch's distinct types of one kind."""
    pool: set = set()
    for row in rows:
        items = getattr(row, key)
        if items:
            pool.update({item[-1] for item in items})
    population = _ordered(pool, cfg.type_order)
    return rng.sample(population, min(cfg.sampled_negative_types, len(population)))


def _augment(row: _Row, cfg: CollateConfig, rng) -> None:
    """gliner's `augment_example` (spec §13.3), in place on the row."""
    entities, relations = row.entities, row.relations
    if not entities:
        return
    entity_drop = rng.uniform(*cfg.augment_ent_drop_prob)
    relation_drop = rng.uniform(*cfg.augment_rel_drop_prob)
    add_other = rng.random() < cfg.augment_add_other_prob
    entity_types = {e[-1] for e in entities}
    relation_types = {r[-1] for r in relations} if relations else set()
    other = cfg.other_label
    dropped_entities = {t for t in _ordered(entity_types, cfg.type_order) if t != other and rng.random() < entity_drop}
    dropped_relations = {t for t in _ordered(relation_types, cfg.type_order) if rng.random() < relation_drop}
    if not dropped_entities and not dropped_relations:
        return
    in_active_relation = {i for h, t, label in relations if label not in dropped_relations for i in (h, t)}
    kept, new_index = [], {}
    for i, (start, end, label) in enumerate(entities):
        if label in dropped_entities:
            if i not in in_active_relation or not add_other:
                continue
            label = other
        new_index[i] = len(kept)
        kept.append((start, end, label))
    row.relations = [
        (new_index[h], new_index[t], label)
        for h, t, label in relations
        if label not in dropped_relations and h in new_index and t in new_index
    ]
    row.entities = kept
    row.dropped_entity_types, row.dropped_relation_types = dropped_entities, dropped_relations


def _distinct(types: list[str], cfg: CollateConfig) -> list[str]:
    if not cfg.shuffle_types:
        return list(dict.fromkeys(types))
    return list(set(types)) if cfg.type_order == "set" else sorted(set(types))


def _sample_types(rows: Sequence[_Row], cfg: CollateConfig, rng, entity_negatives) -> None:
    """gliner's `batch_generate_class_mappings` (relex): each row's entity and relation types."""
    if entity_negatives is None:
        entity_negatives = _negative_types(rows, "entities", cfg, rng)
    relation_negatives = _negative_types(rows, "relations", cfg, rng)
    ratio_cap = int(cfg.max_neg_type_ratio)
    for row in rows:
        ex = row.example
        ratio = rng.randint(0, ratio_cap) if ratio_cap else 0
        for kind, negatives, dropped in (
            ("entity", entity_negatives, row.dropped_entity_types),
            ("relation", relation_negatives, row.dropped_relation_types),
        ):
            items = row.entities if kind == "entity" else row.relations
            fixed = ex.ner_labels if kind == "entity" else ex.rel_labels
            explicit = ex.ner_negatives if kind == "entity" else ex.rel_negatives
            if explicit is not None:
                negs = list(explicit)
            else:
                negs = negatives[: len(items) * ratio] if ratio else []
            if fixed is not None:
                types = list(fixed)
            else:
                types = _distinct([item[-1] for item in items if item[-1] not in dropped] + negs, cfg)
                if cfg.shuffle_types:
                    rng.shuffle(types)
                types = types[: int(cfg.max_types)]
            if kind == "entity" and not row.entities and not types:
                types = [""]  # one unnamed prompt, an all-negative target
            if kind == "entity":
                row.entity_types = types
            else:
                row.relation_types = types


def _per_row_types(types, rows: int, what: str) -> list[list[str]]:
    """Collator-level fixed types: one list for all rows or one per row, de-duplicated."""
    if types is None:
        types = []
    if types and isinstance(types[0], (list, tuple)):
        if len(types) != rows:
            raise ValueError(f"{len(types)} per-row {what} lists for {rows} examples")
        return [list(dict.fromkeys(t)) for t in types]
    return [list(dict.fromkeys(types)) for _ in range(rows)]


@dataclasses.dataclass
class _Targets:
    """One row's word-level targets (gliner's preprocess_example + create_labels)."""

    tokens: list[str]
    labelled: list[tuple[int, int, int]]  # (start, width index k, class id) of gold cells
    spans: list[int]  # distinct labelled flat span indices l*K+k, increasing: the gold entities
    relations: list[tuple[int, int, int]]  # (head, tail, relation class id) on gold-entity numbering


def _row_targets(row: _Row, cfg: CollateConfig) -> _Targets:
    K = cfg.max_width
    tokens = list(row.example.tokens) or ["[PAD]"]
    tokens = tokens[: cfg.max_len]
    L = len(tokens)
    order = sorted(range(len(row.entities)), key=lambda i: row.entities[i][:2])  # stable
    position = {old: new for new, old in enumerate(order)}
    entities = [row.entities[i] for i in order]
    relations = sorted(
        ((position[h], position[t], label) for h, t, label in row.relations if h in position and t in position),
        key=lambda r: r[:2],
    )
    class_id = {label: i for i, label in enumerate(row.entity_types, 1)}
    relation_id = {label: i for i, label in enumerate(row.relation_types, 1)}

    def in_grid(start, end):
        return 0 <= start and 0 <= end - start < K and end < L

    labelled = [(s, e - s, class_id[lab]) for s, e, lab in entities if lab in class_id and in_grid(s, e)]
    spans = sorted({s * K + k for s, k, _ in labelled})
    if cfg.relation_alignment == "gliner":  # every in-grid gold entity counts, labelled or not
        candidates = [j for j, (s, e, _) in enumerate(entities) if in_grid(s, e)]
        number = {j: n for n, j in enumerate(candidates)}
    else:
        rank = {flat: n for n, flat in enumerate(spans)}
        number = {}
        for j, (s, e, _) in enumerate(entities):
            if in_grid(s, e) and s * K + e - s in rank:
                number[j] = rank[s * K + e - s]
    gold_relations = [
        (number[h], number[t], relation_id[lab]) for h, t, lab in relations if h in number and t in number and lab in relation_id
    ]
    return _Targets(tokens, labelled, spans, gold_relations)


@dataclasses.dataclass(frozen=True)
class LongSpan:
    """A gold entity `collate` cannot put on its span grid, so drops (as gliner does): lying
    (partly) outside the text, wider than `max_width` words, or reaching past the first `max_len`
    words (the text is truncated there). `relations` counts the gold relations that lose it as
    head or tail."""

    source: str  # where the example was read (file and record / line), or "example N"
    start: int
    end: int  # inclusive
    label: str
    reason: str
    relations: int

    def __str__(self) -> str:
        return f"{self.source}: entity ({self.start}, {self.end}, {self.label!r}) {self.reason}"


def spans_outside_grid(examples: Sequence[Example], max_width: int, max_len: int) -> list[LongSpan]:
    """Every gold entity of `examples` that `collate` drops for its position or width (before any
    augmentation), in data order: the per-run count behind `data.on_long_span`."""
    out = []
    for n, ex in enumerate(examples):
        for i, (start, end, label) in enumerate(ex.entities):
            if start < 0 or end >= len(ex.tokens):
                reason = f"lies outside the text's {len(ex.tokens)} words"
            elif end - start + 1 > max_width:
                reason = f"is {end - start + 1} words wide, more than max_width={max_width}"
            elif end >= max_len:
                reason = f"ends past the first max_len={max_len} words the text is truncated to"
            else:
                continue
            relations = sum(i in (h, t) for h, t, _ in ex.relations)
            out.append(LongSpan(ex.source or f"example {n}", start, end, label, reason, relations))
    return out


def _relation_pairs(targets: Sequence[_Targets], num_relation_types: int, cfg: CollateConfig, rng):
    """Per row: the scored pairs in gliner's `rel_matrix` row order and their class ids."""
    out = []
    for t in targets:
        n = len(t.spans)
        if num_relation_types == 0:
            out.append(([], {}))
            continue
        classes: dict[tuple[int, int], list[int]] = {}
        if not cfg.adjacency:  # all ordered pairs i != j, row-major (gliner's single-step labels)
            pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
            for h, tl, c in t.relations:
                if h != tl and h < n and tl < n:
                    classes.setdefault((h, tl), []).append(c)
            out.append((pairs, classes))
            continue
        for h, tl, c in t.relations:
            if h < n and tl < n:
                classes.setdefault((h, tl), []).append(c)
        positives = set(classes)
        negatives: set = set()
        if cfg.random_negative_pairs:
            ratio = cfg.negative_pair_ratio
            if isinstance(ratio, (tuple, list)):
                ratio = rng.uniform(ratio[0], ratio[1])
            wanted = max(1, int(len(positives) * ratio))
        if cfg.reversed_negative_pairs:
            negatives = {(tl, h) for h, tl in positives if (tl, h) not in positives}
        if cfg.random_negative_pairs and n > 1 and len(negatives) < wanted:
            for _ in range(wanted * 10):
                if len(negatives) >= wanted:
                    break
                pair = (rng.randint(0, n - 1), rng.randint(0, n - 1))
                if pair[0] != pair[1] and pair not in positives:
                    negatives.add(pair)
        out.append((sorted(positives | negatives), classes))
    return out


def collate(
    examples: Sequence[Example],
    tokenizer,
    config: CollateConfig,
    rng: random.Random | None = None,
    *,
    entity_types=None,
    relation_types=None,
    buckets: Mapping[str, Sequence[int]] | None = None,
    gliner_forms: bool = False,
) -> TrainingBatch:
    """One training batch from `examples`, as gliner's relex data collator with labels.

    `tokenizer` is a `tokenizers.Tokenizer` without padding / truncation (as `build_batch`).
    `rng` supplies every random draw (required when a random feature of `config` is on).
    `entity_types` / `relation_types` (one list, or one list per example) fix the types for the
    whole batch as gliner's collator arguments do: no augmentation, no sampling, no shuffling.
    `buckets`: `build_batch`'s keys ("tokens", "words", "entities" = entity types,
    "relations" = relation types) plus "gold_entities" for E (`BUCKET_KEYS`).
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    cfg = config
    fixed = entity_types is not None
    shuffles = cfg.shuffle_types and any(ex.ner_labels is None or ex.rel_labels is None for ex in examples)
    needs_rng = (not fixed and (cfg.augment_data_prob > 0 or cfg.max_neg_type_ratio > 0 or shuffles)) or (
        cfg.adjacency and cfg.random_negative_pairs
    )
    if rng is None:
        if needs_rng:
            raise ValueError("this CollateConfig draws random numbers: pass rng= (or use config.deterministic())")
        rng = _NoRandom()
    rows = [_Row(ex, list(ex.entities), list(ex.relations)) for ex in examples]

    if fixed:
        for row, ents, rels in zip(
            rows, _per_row_types(entity_types, len(rows), "entity"), _per_row_types(relation_types, len(rows), "relation")
        ):
            row.entity_types, row.relation_types = ents, rels
    else:
        entity_negatives = None
        if cfg.augment_data_prob > 0:
            entity_negatives = _negative_types(rows, "entities", cfg, rng)  # before augmentation, as gliner
            for row in rows:
                if rng.random() < cfg.augment_data_prob:
                    _augment(row, cfg, rng)
        _sample_types(rows, cfg, rng, entity_negatives)

    targets = [_row_targets(row, cfg) for row in rows]
    truncated = sum(len(row.example.tokens) > cfg.max_len for row in rows)
    if truncated:
        log.warning("%d of %d texts truncated to max_len=%d words (as gliner)", truncated, len(rows), cfg.max_len)

    buckets = dict(buckets or {})
    inputs = build_batch(
        tokenizer, [t.tokens for t in targets], [r.entity_types for r in rows], [r.relation_types for r in rows],
        ent_token=cfg.ent_token, sep_token=cfg.sep_token, rel_token=cfg.rel_token, max_width=cfg.max_width,
        pad_id=cfg.pad_id, pooling=cfg.pooling, embed_ent_token=cfg.embed_ent_token,
        embed_rel_token=cfg.embed_rel_token,
        buckets={k: tuple(v) for k, v in buckets.items() if k != "gold_entities"},
    )
    B, W, K = inputs.span_mask.shape
    C, R = inputs.entity_prompt_index.shape[1], inputs.relation_prompt_index.shape[1]

    entity_labels = np.zeros((B, W, K, C), np.float32)
    for b, t in enumerate(targets):
        for start, k, c in t.labelled:
            entity_labels[b, start, k, c - 1] = 1.0

    num_relation_types = max(len(r.relation_types) for r in rows)
    pairs = _relation_pairs(targets, num_relation_types, cfg, rng)
    n_max = max(max(len(t.spans) for t in targets), 1)
    E = _bucket(n_max, tuple(buckets["gold_entities"]) if "gold_entities" in buckets else None)
    entity_index = np.zeros((B, E), np.int32)
    entity_mask = np.zeros((B, E), bool)
    relation_labels = np.zeros((B, E, E, R), np.float32)
    pair_mask = np.zeros((B, E, E), bool)
    adjacency = np.zeros((B, E, E), np.float32) if cfg.adjacency else None
    for b, (t, (row_pairs, classes)) in enumerate(zip(targets, pairs)):
        entity_index[b, : len(t.spans)] = t.spans
        entity_mask[b, : len(t.spans)] = True
        for h, tl in row_pairs:
            if adjacency is not None:
                adjacency[b, h, tl] = 1.0
            if h != tl:
                pair_mask[b, h, tl] = True
                for c in classes.get((h, tl), ()):
                    relation_labels[b, h, tl, c - 1] = 1.0

    entity_names = [list(r.entity_types) for r in rows]
    relation_names = [list(r.relation_types) for r in rows]
    raw = None
    if gliner_forms:
        raw = _gliner_forms(inputs, entity_labels, targets, rows, pairs, num_relation_types, n_max, cfg)
    return TrainingBatch(
        inputs, entity_labels, entity_index, entity_mask, relation_labels, pair_mask, adjacency,
        entity_names, relation_names, raw,
    )


def _gliner_forms(inputs: Batch, entity_labels, targets, rows, pairs, num_relation_types, n_max, cfg) -> dict[str, Any]:
    """gliner's collator outputs, unpadded (its shapes and dtypes, as numpy)."""
    B, _, K = inputs.span_mask.shape
    lengths = np.array([len(t.tokens) for t in targets])
    L = int(lengths.max())
    C = max(len(r.entity_types) for r in rows)
    T = int(inputs.attention_mask.sum(1).max())
    starts = np.repeat(np.arange(L), K)
    span_idx = np.stack([starts, starts + np.tile(np.arange(K), L)], -1)
    span_idx = np.where((starts[None, :] < lengths[:, None])[..., None], span_idx[None], 0)
    out: dict[str, Any] = {
        "input_ids": inputs.input_ids[:, :T].astype(np.int64),
        "attention_mask": inputs.attention_mask[:, :T].astype(np.int64),
        "words_mask": inputs.words_mask[:, :T].astype(np.int64),
        "text_lengths": lengths[:, None].astype(np.int64),
        "span_idx": span_idx.astype(np.int64),
        "span_mask": inputs.span_mask[:, :L].reshape(B, L * K),
        "labels": entity_labels[:, :L, :, :C].reshape(B, L * K, C),
        "classes_to_id": [{n: i for i, n in enumerate(r.entity_types, 1)} for r in rows],
        "id_to_classes": [dict(enumerate(r.entity_types, 1)) for r in rows],
        "rel_class_to_ids": [{n: i for i, n in enumerate(r.relation_types, 1)} for r in rows],
        "rel_id_to_classes": [dict(enumerate(r.relation_types, 1)) for r in rows],
    }
    if num_relation_types == 0:
        out["rel_matrix"] = np.zeros((B, 1, 1), np.float32)
        if cfg.adjacency:
            out["adj_matrix"] = np.zeros((B, n_max, n_max), np.float32)
        return out
    rel_matrix = np.zeros((B, max(max(len(p) for p, _ in pairs), 1), num_relation_types), np.float32)
    adj = np.zeros((B, n_max, n_max), np.float32)
    for b, (row_pairs, classes) in enumerate(pairs):
        for p, pair in enumerate(row_pairs):
            adj[b][pair] = 1.0
            for c in classes.get(pair, ()):
                rel_matrix[b, p, c - 1] = 1.0
    out["rel_matrix"] = rel_matrix
    if cfg.adjacency:
        out["adj_matrix"] = adj
    return out
