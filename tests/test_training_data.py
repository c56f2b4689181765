"""Training data: readers, and collated batches + gold targets against gliner's own data collator."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gliner_fixtures import build_relex_model, torch

from relex_jax.config import RelexConfig
from relex_jax.data.collate import CollateConfig, collate, spans_outside_grid
from relex_jax.data.readers import (
    Example,
    MalformedRecord,
    parse_gliner_record,
    read_examples,
    read_gliner_json,
    read_jsonl,
)

pytestmark = pytest.mark.filterwarnings("ignore:Sentence of length")  # gliner's max_len truncation notice

CONLL04_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll04" / "train.jsonl"
CONLL_ENTITIES = ["Peop", "Org", "Loc", "Other"]
CONLL_RELATIONS = ["Work_For", "Kill", "OrgBased_In", "Live_In", "Located_In"]

# Edge cases in gliner's format (max_width K = 4 in the fixture model).
HANDMADE = [
    {  # one span with two labels; a pair with two relation types; gliner's numbering misaligns here
        "tokenized_text": "Alice Smith works at Google in Paris since 2019 .".split(),
        "ner": [[4, 4, "organization"], [0, 1, "person"], [0, 1, "employee"], [6, 6, "location"], [8, 8, "date"]],
        "relations": [[1, 0, "works at"], [2, 0, "works at"], [0, 3, "located in"], [0, 3, "based in"], [1, 4, "since"]],
        "ner_labels": ["person", "employee", "organization", "location", "date"],
        "rel_labels": ["works at", "located in", "based in", "since"],
    },
    {  # an entity wider than max_width, with a relation to it; two outside the text (gliner drops them)
        "tokenized_text": "The University of California at Berkeley hired Maria Garcia .".split(),
        "ner": [[1, 5, "organization"], [7, 8, "person"], [10, 11, "person"], [-1, 0, "organization"]],
        "relations": [[1, 0, "works at"], [2, 3, "works at"]],
        "ner_labels": ["organization", "person"],
        "rel_labels": ["works at"],
    },
    {  # a relation to an entity whose label is not among the types (dropped), sorted first
        "tokenized_text": "In 1990 Bob founded Siemens in Berlin .".split(),
        "ner": [[2, 2, "person"], [4, 4, "organization"], [6, 6, "location"], [1, 1, "date"]],
        "relations": [[0, 1, "founded"], [1, 2, "located in"], [1, 3, "founded in"]],
        "ner_labels": ["organization", "person", "location"],
        "rel_labels": ["founded", "located in", "founded in"],
    },
    {  # a self-relation
        "tokenized_text": "Quentin Walker praised Oxford University again .".split(),
        "ner": [[0, 1, "person"], [3, 4, "organization"]],
        "relations": [[0, 0, "praised"], [0, 1, "praised"]],
        "ner_labels": ["person", "organization"],
        "rel_labels": ["praised"],
    },
    {  # nothing annotated, no types: gliner gives one unnamed entity prompt
        "tokenized_text": "Nothing to see here .".split(),
        "ner": [],
        "relations": [],
        "ner_labels": [],
        "rel_labels": [],
    },
]


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(gliner model, our tokenizer, our RelexConfig) for one tiny gliner relex checkpoint."""
    from tokenizers import Tokenizer

    model, path = build_relex_model(tmp_path_factory.mktemp("train") / "model", seed=0)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    config = RelexConfig.from_gliner_dict(json.loads((path / "gliner_config.json").read_text()))
    return model, tokenizer, config, path


def handmade_examples() -> list[Example]:
    examples = [parse_gliner_record(r, f"handmade {i}") for i, r in enumerate(HANDMADE)]
    return examples + [Example(tokens=(), ner_labels=(), rel_labels=())]  # gliner substitutes "[PAD]"


def conll_examples(n: int = 40) -> list[Example]:
    if not CONLL04_TRAIN.is_file():
        pytest.skip(f"{CONLL04_TRAIN} is absent")
    return read_jsonl(CONLL04_TRAIN)[:n]


def with_fixed_labels(examples: list[Example]) -> list[Example]:
    """Per-text fixed types, varied: a dropped entity type, a relation subset, both orders."""
    out = []
    for i, ex in enumerate(examples):
        ents = [t for t in CONLL_ENTITIES if not (i % 3 == 0 and t == "Other")]
        rels = CONLL_RELATIONS[:3] if i % 4 == 1 else list(CONLL_RELATIONS)
        if i % 2:
            ents, rels = ents[::-1], rels[::-1]
        out.append(dataclasses.replace(ex, ner_labels=tuple(ents), rel_labels=tuple(rels)))
    return out


def datasets(name: str) -> list[list[Example]]:
    """Batches of one data set: CoNLL04 (fixed labels) in batches of 10, or the handmade cases."""
    if name == "handmade":
        return [handmade_examples()]
    examples = with_fixed_labels(conll_examples())
    return [examples[i : i + 10] for i in range(0, len(examples), 10)]


def gliner_collator(model, **config_changes):
    """gliner's relex data collator with labels (as its trainer builds it), config fields changed."""
    config = copy.deepcopy(model.config)
    for key, value in config_changes.items():
        setattr(config, key, value)
    processor = type(model.data_processor)(config, model.data_processor.transformer_tokenizer, None)
    return model.data_collator_class(
        config, data_processor=processor, prepare_labels=True, return_id_to_classes=True, return_rel_id_to_classes=True,
    )


def run_gliner(collator, examples: list[Example], seed: int, **kwargs) -> dict:
    random.seed(seed)
    out = collator([ex.to_gliner() for ex in examples], **kwargs)
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


ARRAYS = ("input_ids", "attention_mask", "words_mask", "text_lengths", "span_idx", "span_mask", "labels", "rel_matrix")


def assert_equals_gliner(ours, ref: dict) -> None:
    """Our batch (raw forms and grid targets) against gliner's collator output."""
    raw = ours.gliner
    for name in ARRAYS + (("adj_matrix",) if "adj_matrix" in ref else ()):
        assert raw[name].shape == ref[name].shape, (name, raw[name].shape, ref[name].shape)
        assert raw[name].dtype == ref[name].dtype, (name, raw[name].dtype, ref[name].dtype)
        np.testing.assert_array_equal(raw[name], ref[name], err_msg=name)
    assert ("adj_matrix" in raw) == ("adj_matrix" in ref)
    assert raw["id_to_classes"] == ref["id_to_classes"]
    assert raw["rel_id_to_classes"] == ref["rel_id_to_classes"]
    assert raw["rel_class_to_ids"] == ref["rel_class_to_ids"]
    assert ours.entity_types == [list(m.values()) for m in ref["id_to_classes"]]
    assert ours.relation_types == [list(m.values()) for m in ref["rel_id_to_classes"]]
    assert_grid_matches(ours, ref)


def assert_grid_matches(ours, ref: dict) -> None:
    """Grid targets read back in gliner's layouts, straight from gliner's tensors."""
    B, W, K, C = ours.entity_labels.shape
    L, Cg = ref["text_lengths"].max(), ref["labels"].shape[-1]
    np.testing.assert_array_equal(ours.entity_labels[:, :L, :, :Cg].reshape(B, L * K, Cg), ref["labels"])
    assert not ours.entity_labels[:, L:].any() and not ours.entity_labels[..., Cg:].any()
    E = ours.entity_mask.shape[1]
    for b in range(B):
        gold = np.nonzero(ref["labels"][b].max(-1) == 1)[0]  # gliner's training entity selection
        n = len(gold)
        np.testing.assert_array_equal(ours.entity_index[b, :n], gold)
        assert ours.entity_mask[b].sum() == n and ours.entity_mask[b, :n].all()
        num_relation_types = max(len(m) for m in ref["rel_class_to_ids"])
        if "adj_matrix" in ref:
            adj = ref["adj_matrix"][b]
            np.testing.assert_array_equal(ours.adjacency[b, : adj.shape[0], : adj.shape[1]], adj)
            assert ours.adjacency[b].sum() == adj.sum()
            cells = np.argwhere(adj > 0)  # sorted pairs = rel_matrix row order
        elif num_relation_types:
            cells = np.array([(i, j) for i in range(n) for j in range(n) if i != j], int).reshape(-1, 2)
        else:
            cells = np.zeros((0, 2), int)
        rows = ref["rel_matrix"][b, : len(cells)]
        assert not ref["rel_matrix"][b, len(cells) :].any()
        off = cells[:, 0] != cells[:, 1]  # gliner never scores i == i (self-relations)
        expected_mask = np.zeros((E, E), bool)
        expected_mask[tuple(cells[off].T)] = True
        np.testing.assert_array_equal(ours.pair_mask[b], expected_mask)
        if num_relation_types:
            R = rows.shape[-1]
            np.testing.assert_array_equal(ours.relation_labels[b][tuple(cells[off].T)][:, :R], rows[off])
        assert ours.relation_labels[b].sum() == rows[off].sum()


def ours_config(config: RelexConfig, **changes) -> CollateConfig:
    return CollateConfig.from_relex_config(config, **changes)


# --------------------------------------------------------------------------------------------------
# Collation against gliner
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["conll04", "handmade"])
@pytest.mark.parametrize("layer", ["none", "dot"])
@pytest.mark.parametrize("max_len", [384, 8])
def test_fixed_types_equal_gliner(reference, data, layer, max_len):
    """No augmentation, fixed per-text types, no negative types: our batch is gliner's. With an
    adjacency head gliner samples negative pairs; the same seed gives the same pairs."""
    model, tokenizer, config, _ = reference
    collator = gliner_collator(model, relations_layer=layer, augment_data_prob=0.0, max_neg_type_ratio=0, max_len=max_len)
    cfg = ours_config(config, adjacency=layer != "none", max_len=max_len, augment_data_prob=0.0, max_neg_type_ratio=0)
    assert cfg.max_types == model.config.max_types and cfg.max_width == model.config.max_width
    for seed, examples in enumerate(datasets(data)):
        ref = run_gliner(collator, examples, seed)
        rng = random.Random(seed) if layer != "none" else None
        ours = collate(examples, tokenizer, cfg, rng, gliner_forms=True)
        assert_equals_gliner(ours, ref)


def test_handmade_targets_by_hand(reference):
    """Spot values, so that gliner agreeing with us is not the only evidence."""
    _, tokenizer, config, _ = reference
    cfg = ours_config(config).deterministic()
    batch = collate(handmade_examples()[:4], tokenizer, cfg)
    K = cfg.max_width
    # row 0 types: person=0 employee=1 organization=2 location=3 date=4; (0, 1) carries two labels
    np.testing.assert_array_equal(batch.entity_labels[0, 0, 1], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch.entity_index[0, :4], [0 * K + 1, 4 * K, 6 * K, 8 * K])
    # gliner numbering: person 0, employee 1, organization 2, location 3, date 4; 4 gold spans
    # -> "works at" person->org lands on cell (0, 2) = span (0,1) -> location, etc.
    rel = batch.relation_labels[0]
    assert rel[0, 2, 0] == 1 and rel[1, 2, 0] == 1 and rel[2, 3, 1] == rel[2, 3, 2] == 1
    assert rel.sum() == 4  # "since" (person -> date = number 4) falls outside the 4 gold entities
    # row 1: the 5-word organization is not a candidate; no relation survives
    assert batch.entity_mask[1].sum() == 1 and batch.relation_labels[1].sum() == 0
    # row 2: "date" is not a type, yet numbered 0 by gliner: person->org lands on (1, 2)
    assert batch.entity_mask[2].sum() == 3
    assert batch.relation_labels[2, 1, 2, 0] == 1 and batch.relation_labels[2].sum() == 2
    # row 3: the self-relation is dropped (no i == i pair), the other is kept
    assert batch.relation_labels[3, 0, 1, 0] == 1 and batch.relation_labels[3].sum() == 1


@pytest.mark.parametrize("max_len", [384, 8])
def test_spans_outside_grid_are_exactly_what_collate_drops(reference, max_len):
    """`spans_outside_grid` (the per-run count behind data.on_long_span) lists exactly the gold
    entities that get no target in the collated batch: too wide for max_width, or past max_len."""
    _, tokenizer, config, _ = reference
    cfg = ours_config(config, max_len=max_len).deterministic()
    examples = strip_labels(handmade_examples()[:4])  # every label of a text is one of its types
    batch = collate(examples, tokenizer, cfg)
    missing = [(ex.source, s, e, label) for b, ex in enumerate(examples) for s, e, label in ex.entities
               if not 0 <= s < batch.entity_labels.shape[1] or e - s >= cfg.max_width
               or not batch.entity_labels[b, s, e - s, batch.entity_types[b].index(label)]]
    found = spans_outside_grid(examples, cfg.max_width, cfg.max_len)
    assert [(x.source, x.start, x.end, x.label) for x in found] == missing and missing
    assert any("more than max_width=4" in str(x) for x in found)
    outside = [str(x) for x in found if "outside the text" in str(x)]
    assert outside == ["handmade 1: entity (10, 11, 'person') lies outside the text's 10 words",
                       "handmade 1: entity (-1, 0, 'organization') lies outside the text's 10 words"]
    assert [x.relations for x in found if x.start in (10, -1)] == [1, 1]
    assert (max_len == 8) == any(f"max_len={max_len}" in str(x) for x in found)
    assert str(found[0]).startswith("handmade ")


def test_span_alignment_puts_relations_on_their_spans(reference):
    _, tokenizer, config, _ = reference
    cfg = ours_config(config, relation_alignment="span").deterministic()
    batch = collate(handmade_examples()[:3], tokenizer, cfg)
    rel = batch.relation_labels
    # row 0 spans: (0,1) person+employee -> 0, Google 1, Paris 2, 2019 3
    expected = {(0, 1, 0), (1, 2, 1), (1, 2, 2), (0, 3, 3)}
    assert {tuple(x) for x in np.argwhere(rel[0])} == expected
    # row 2 spans: Bob 0, Siemens 1, Berlin 2 ("date" is no type): relations to it dropped
    assert {tuple(x) for x in np.argwhere(rel[2])} == {(0, 1, 0), (1, 2, 1)}


def test_batch_level_types_equal_gliner(reference):
    """Types fixed for the whole batch (gliner's collator arguments), one list per text."""
    model, tokenizer, config, _ = reference
    examples = conll_examples(12)
    collator = gliner_collator(model)  # default augmentation: the fixed types switch it off
    ents = [CONLL_ENTITIES[: 2 + i % 3] for i in range(len(examples))]
    rels = [CONLL_RELATIONS[i % 3 :] for i in range(len(examples))]
    ref = run_gliner(collator, examples, 0, entity_types=ents, relation_types=rels)
    ours = collate(examples, tokenizer, ours_config(config), None, entity_types=ents, relation_types=rels, gliner_forms=True)
    assert_equals_gliner(ours, ref)


def test_gliner_quirk_flat_batch_types_crash(reference):
    """One flat type list for the batch: gliner's label builder indexes the shared mapping by row
    and fails; ours applies the list to every row."""
    model, tokenizer, config, _ = reference
    examples = handmade_examples()[:2]
    with pytest.raises(KeyError):
        run_gliner(gliner_collator(model), examples, 0, entity_types=["person"], relation_types=["works at"])
    ours = collate(examples, tokenizer, ours_config(config), None, entity_types=["person"], relation_types=["works at"])
    assert ours.entity_types == [["person"], ["person"]] and ours.relation_types == [["works at"], ["works at"]]


def strip_labels(examples):
    return [dataclasses.replace(ex, ner_labels=None, rel_labels=None) for ex in examples]


@pytest.mark.parametrize("layer", ["none", "dot"])
def test_random_features_equal_gliner_call_for_call(reference, layer):
    """Augmentation, in-batch negative types, shuffled prompts and (dot) negative pairs ON, gliner's
    defaults: Python's `random` seeded for gliner, the same seed in our `random.Random`. With
    type_order="set" the batches are identical, so our RNG use mirrors gliner's call for call."""
    model, tokenizer, config, _ = reference
    examples = strip_labels(handmade_examples()[:5])
    examples[1] = dataclasses.replace(examples[1], ner_negatives=("date", "money"), rel_negatives=("born in",))
    examples[2] = handmade_examples()[2]  # fixed types do not stop gliner's augmentation of this text
    if CONLL04_TRAIN.is_file():
        examples += strip_labels(conll_examples(19))
    collator = model._create_data_collator() if layer == "none" else gliner_collator(model, relations_layer=layer)
    if layer == "none":  # the trainer's own collator; add the class mappings to compare
        collator.return_id_to_classes = collator.return_rel_id_to_classes = True
    cfg = ours_config(config, adjacency=layer != "none", type_order="set")
    assert cfg.augment_data_prob == 0.5 and cfg.max_neg_type_ratio == 1 and cfg.shuffle_types
    changed = 0
    for seed in range(6):
        ref = run_gliner(collator, examples, seed)
        rng = random.Random(seed)
        ours = collate(examples, tokenizer, cfg, rng, gliner_forms=True)
        assert_equals_gliner(ours, ref)
        assert rng.getstate() == random.getstate()  # nothing drawn more or less than gliner
        gold = [sorted({e[-1] for e in ex.entities}) for ex in examples]
        changed += sum(sorted(t) != g for t, g in zip(ours.entity_types, gold) if g)
    assert changed > 0  # the random features did change types (drops, "other", negatives)


_HASH_SCRIPT = """
import json, random, sys
from tokenizers import Tokenizer
from relex_jax.config import RelexConfig
from relex_jax.data.collate import CollateConfig, collate
from relex_jax.data.readers import parse_gliner_record
path, records = sys.argv[1], json.loads(sys.argv[2])
tok = Tokenizer.from_file(path + "/tokenizer.json"); tok.no_padding(); tok.no_truncation()
config = RelexConfig.from_gliner_dict(json.load(open(path + "/gliner_config.json")))
examples = [parse_gliner_record(r) for r in records]
out = {}
for order in ("sorted", "set"):
    batch = collate(examples, tok, CollateConfig.from_relex_config(config, adjacency=True, type_order=order), random.Random(7))
    out[order] = [batch.entity_types, batch.relation_types, batch.entity_labels.nonzero()[0].tolist(),
                  batch.relation_labels.nonzero()[0].tolist(), batch.inputs.input_ids.tolist()]
print(json.dumps(out))
"""


def test_sorted_type_order_is_reproducible_across_processes(reference):
    """gliner orders types through a `set`, i.e. by PYTHONHASHSEED; "sorted" does not depend on it."""
    _, _, _, path = reference
    records = [{k: v for k, v in r.items() if k not in ("ner_labels", "rel_labels")} for r in HANDMADE[:4]]
    records += [{"tokenized_text": ["a", "b", "c"], "ner": [[0, 0, t]], "relations": []} for t in "PQRSTUVWXYZ"]
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "JAX_PLATFORMS": "cpu"}
        done = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, str(path), json.dumps(records)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert outs[0]["sorted"] == outs[1]["sorted"]
    assert outs[0]["set"] != outs[1]["set"]  # gliner's order: hash-dependent


def test_deterministic_config_needs_no_rng(reference):
    _, tokenizer, config, _ = reference
    examples = strip_labels(handmade_examples()[:4])
    with pytest.raises(ValueError, match="rng"):
        collate(examples, tokenizer, ours_config(config), None)
    cfg = ours_config(config, adjacency=True).deterministic()
    a = collate(examples, tokenizer, cfg, None)
    b = collate(examples, tokenizer, cfg, random.Random(1))
    assert a.entity_types == b.entity_types == [["organization", "person", "employee", "location", "date"],
                                                 ["organization", "person"], ["person", "organization", "location", "date"],
                                                 ["person", "organization"]]
    for name in ("entity_labels", "relation_labels", "pair_mask", "adjacency"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # without random pairs only positives and their reversals are sampled
    np.testing.assert_array_equal(a.adjacency[3, :2, :2], [[1, 1], [1, 0]])


def test_buckets_pad_targets(reference):
    _, tokenizer, config, _ = reference
    examples = handmade_examples()[:4]
    cfg = ours_config(config, adjacency=True).deterministic()
    plain = collate(examples, tokenizer, cfg, gliner_forms=True)
    buckets = {"tokens": (128, 256), "words": (16, 32), "entities": (8,), "relations": (8,), "gold_entities": (8,)}
    padded = collate(examples, tokenizer, cfg, buckets=buckets, gliner_forms=True)
    B, W, K, C = padded.entity_labels.shape
    assert (W, C, padded.inputs.input_ids.shape[1], padded.relation_labels.shape[1:]) == (16, 8, 128, (8, 8, 8))
    w, c = plain.entity_labels.shape[1], plain.entity_labels.shape[3]
    np.testing.assert_array_equal(padded.entity_labels[:, :w, :, :c], plain.entity_labels)
    assert padded.entity_labels.sum() == plain.entity_labels.sum()
    e, r = plain.relation_labels.shape[1], plain.relation_labels.shape[3]
    np.testing.assert_array_equal(padded.relation_labels[:, :e, :e, :r], plain.relation_labels)
    assert padded.relation_labels.sum() == plain.relation_labels.sum()
    assert padded.pair_mask.sum() == plain.pair_mask.sum() and padded.adjacency.sum() == plain.adjacency.sum()
    for name, value in plain.gliner.items():  # gliner's unpadded forms do not depend on buckets
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(padded.gliner[name], value, err_msg=name)


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def test_jsonl_spans_become_inclusive(tmp_path):
    line = {
        "id": "x", "orig_id": 3, "tokens": ["Alice", "Smith", "works", "at", "Google"],
        "entities": [{"start": 0, "end": 2, "type": "person", "name": "A"}, {"start": 4, "end": 5, "type": "org"}],
        "relations": [{"head": 0, "tail": 1, "type": "works at", "evidence": [0]}],
    }
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(line) + "\n\n")
    (ex,) = read_examples(path)
    assert ex.tokens == ("Alice", "Smith", "works", "at", "Google")
    assert ex.entities == ((0, 1, "person"), (4, 4, "org")) and ex.relations == ((0, 1, "works at"),)
    assert ex.source == f"{path}: line 1"


def test_gliner_json_round_trip(tmp_path):
    records = [dict(r) for r in HANDMADE] + [{"tokenized_text": ["x"], "ner": [[0, 0, "t"]], "ner_negatives": ["u", "u"]}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    examples = read_examples(path)
    assert [ex.to_gliner() for ex in examples[:-1]] == records[:-1]
    assert examples[-1].ner_negatives == ("u",) and examples[-1].relations == () and examples[-1].ner_labels is None
    assert "record 5" in examples[-1].source


def test_conll04_reads_cleanly():
    if not CONLL04_TRAIN.is_file():
        pytest.skip(f"{CONLL04_TRAIN} is absent")
    errors: list = []
    examples = read_jsonl(CONLL04_TRAIN, on_error="skip", errors=errors)
    assert len(examples) == 922 and errors == []
    raw = json.loads(CONLL04_TRAIN.read_text().splitlines()[0])
    assert examples[0].entities[0] == (raw["entities"][0]["start"], raw["entities"][0]["end"] - 1, raw["entities"][0]["type"])


GOOD = {"tokens": ["Bob", "met", "Ann"], "entities": [{"start": 0, "end": 1, "type": "p"}, {"start": 2, "end": 3, "type": "p"}],
        "relations": [{"head": 0, "tail": 1, "type": "met"}]}
MALFORMED = {
    "bad index": ({"entities": [{"start": "0", "end": 1, "type": "p"}], "relations": []}, "non-integer"),
    "end < start": ({"entities": [{"start": 2, "end": 2, "type": "p"}], "relations": []}, "ends before it starts"),
    "unknown key": ({"relation": []}, "unknown keys ['relation']"),
    "empty tokens": ({"tokens": [], "entities": [], "relations": []}, "empty tokens"),
    "relation out of range": ({"relations": [{"head": 0, "tail": 2, "type": "met"}]}, "outside the 2 entities"),
    "blank label": ({"entities": [{"start": 0, "end": 1, "type": " "}], "relations": []}, "label"),
    "null entities": ({"entities": None}, "entities must be a list"),
}


def _write_jsonl(path: Path, bad: dict) -> None:
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, **bad}), json.dumps(GOOD)]
    path.write_text("\n".join(lines) + "\n")


def _gliner_record(record: dict) -> dict:
    out = {"tokenized_text": record["tokens"]}
    if "entities" in record and isinstance(record["entities"], list):
        out["ner"] = [[e["start"], e["end"] - 1 if isinstance(e["end"], int) else e["end"], e["type"]] for e in record["entities"]]
    else:
        out["ner"] = record.get("entities")
    out["relations"] = [[r["head"], r["tail"], r["type"]] for r in record.get("relations", [])]
    out.update({k: v for k, v in record.items() if k not in ("tokens", "entities", "relations")})
    return out


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_jsonl_malformed(tmp_path, caplog, kind):
    bad, message = MALFORMED[kind]
    path = tmp_path / "data.jsonl"
    _write_jsonl(path, bad)
    with pytest.raises(MalformedRecord, match="line 3") as info:
        read_jsonl(path, on_error="raise")
    assert str(path) in str(info.value) and message in str(info.value)
    errors: list = []
    with caplog.at_level(logging.WARNING, logger="relex_jax.data.readers"):
        examples = read_jsonl(path, on_error="skip", errors=errors)
    assert len(examples) == 2 and [ex.source for ex in examples] == [f"{path}: line 1", f"{path}: line 4"]
    assert len(errors) == 1 and f"{path}: line 3" in errors[0] and message in errors[0]
    assert "skipped 1 malformed of 3 records" in caplog.text


@pytest.mark.parametrize("kind", sorted(set(MALFORMED) - {"null entities", "unknown key"}))  # both fine in gliner's format
def test_gliner_json_malformed(tmp_path, caplog, kind):
    bad, message = MALFORMED[kind]
    good = _gliner_record(GOOD)
    record = _gliner_record({**GOOD, **bad})
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, good, record, good]))
    with pytest.raises(MalformedRecord, match="record 2") as info:
        read_gliner_json(path)
    assert str(path) in str(info.value) and message in str(info.value)
    errors: list = []
    with caplog.at_level(logging.WARNING, logger="relex_jax.data.readers"):
        assert len(read_gliner_json(path, on_error="skip", errors=errors)) == 3
    assert len(errors) == 1 and "record 2" in errors[0]
    assert "skipped 1 malformed of 4 records" in caplog.text


def test_entities_outside_the_text_are_read_as_given(tmp_path):
    """gliner reads them (and gives them no target): not malformed, in both formats; training
    counts them (`spans_outside_grid`, above), evaluation scores them as missed."""
    entities = [{"start": 2, "end": 4, "type": "p"}, {"start": -1, "end": 1, "type": "p"}]
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({**GOOD, "entities": entities, "relations": []}) + "\n")
    gliner_path = tmp_path / "data.json"
    gliner_path.write_text(json.dumps([_gliner_record({**GOOD, "entities": entities, "relations": []})]))
    for examples in (read_jsonl(path), read_gliner_json(gliner_path)):
        assert examples[0].entities == ((2, 3, "p"), (-1, 0, "p"))


def test_gliner_json_ignores_unknown_keys_and_reads_null_ner(tmp_path, caplog):
    """Real gliner files carry extra keys (an "id"): gliner ignores them, so do we, naming them once
    per read; `"ner": null` is a text without entities. Missing keys and wrong types still fail."""
    records = [{**_gliner_record(GOOD), "id": i, "meta": {"x": 1}} for i in range(3)]
    records[1]["ner"], records[1]["relations"] = None, []
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    with caplog.at_level(logging.INFO, logger="relex_jax.data.readers"):
        examples = read_gliner_json(path)
    assert [len(ex.entities) for ex in examples] == [2, 0, 2] and examples[0] == parse_gliner_record(_gliner_record(GOOD))
    notes = [r.getMessage() for r in caplog.records if "ignored keys" in r.getMessage()]
    assert len(notes) == 1 and "['id', 'meta']" in notes[0] and str(path) in notes[0]
    with pytest.raises(MalformedRecord, match=r"record 1: missing keys \['ner'\]"):
        path.write_text(json.dumps([records[0], {"tokenized_text": ["a"], "id": 1}]))
        read_gliner_json(path)
    with pytest.raises(MalformedRecord, match="ner must be a list"):
        parse_gliner_record({"tokenized_text": ["a"], "ner": "Peop"})


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_gliner_json_is_streamed_record_by_record(tmp_path, monkeypatch, chunk):
    """Records are decoded one at a time over a buffer of JSON_CHUNK_CHARS (here down to one
    character, so records and strings holding "]" or "," straddle reads); broken JSON still names
    the line, as json.loads would."""
    import relex_jax.data.readers as readers

    if chunk:
        monkeypatch.setattr(readers, "JSON_CHUNK_CHARS", chunk)
    tricky = {**_gliner_record(GOOD), "tokenized_text": ["B]ob", ",", "Ann\n"], "id": 12345}
    records = [tricky, _gliner_record(GOOD), tricky]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records, indent=1))
    assert list(readers.json_array_records(path)) == records
    assert read_gliner_json(path, shard=(1, 2)) == [parse_gliner_record(_gliner_record(GOOD))]
    # the records before the broken text are read (and fine): the first problem in file order is the JSON
    ok = json.dumps(_gliner_record(GOOD))
    for text, line in ((f'[\n{ok},\n\n{{"a": }}]', 4), (f"[{ok},\n{ok}", 2), (f"[{ok}]\n\nx", 3), ("", 1)):
        path.write_text(text)
        with pytest.raises(MalformedRecord, match=f"data.json: line {line}: not valid JSON"):
            read_gliner_json(path)
    path.write_text('{"tokenized_text": ["a"], "ner": []}')
    with pytest.raises(MalformedRecord, match="holds a JSON list, got dict"):
        read_gliner_json(path)


def test_gliner_json_shard_never_holds_the_whole_file(tmp_path, monkeypatch):
    """A host keeps its shard only: reading 1/20 of a 1 MB file in 64 KB reads peaks under the
    file's size (the whole-file json.loads peaked at ~9.5x it)."""
    import tracemalloc

    import relex_jax.data.readers as readers

    monkeypatch.setattr(readers, "JSON_CHUNK_CHARS", 1 << 16)

    record = {"tokenized_text": [f"w{i}" for i in range(60)], "ner": [[0, 1, "p"]], "relations": [], "id": 1}
    path = tmp_path / "big.json"
    path.write_text(json.dumps([record] * 2000))
    tracemalloc.start()
    try:
        examples = read_gliner_json(path, shard=(0, 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(examples) == 100
    assert peak < path.stat().st_size, (peak, path.stat().st_size)


def test_unreadable_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(MalformedRecord, match=r"bad.jsonl: line 2: not valid JSON"):
        read_jsonl(path)
    assert len(read_jsonl(path, on_error="skip")) == 1
    whole = tmp_path / "bad.json"
    whole.write_text('[\n{"tokenized_text": ["a"], "ner": []}\n,,]')  # streamed: the records before it are fine
    with pytest.raises(MalformedRecord, match=r"bad.json: line 3"):
        read_gliner_json(whole)
    with pytest.raises(ValueError, match="on_error"):
        read_jsonl(path, on_error="ignore")


def _jsonl_record(i: int) -> dict:
    return {"id": f"r{i}", "tokens": ["Ann", f"w{i}", "lives", "in", "Rome"],
            "entities": [{"start": 0, "end": 1, "type": "person"}, {"start": 4, "end": 5, "type": "location"}],
            "relations": [{"head": 0, "tail": 1, "type": "lives in"}]}


def test_shards_split_records_between_hosts(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(_jsonl_record(i)) for i in range(5)]
    lines[2] = "{not json"  # host 1 never parses host 0's records
    path.write_text("\n".join(lines) + "\n")
    host1 = read_examples(path, shard=(1, 2))
    assert [ex.tokens[1] for ex in host1] == ["w1", "w3"]
    with pytest.raises(MalformedRecord, match="line 3"):
        read_examples(path, shard=(0, 2))
    assert [ex.tokens[1] for ex in read_examples(path, on_error="skip", shard=(0, 2))] == ["w0", "w4"]
    with pytest.raises(ValueError, match="shard"):
        read_examples(path, shard=(2, 2))


def test_datasets_reader_on_a_local_dataset(tmp_path):
    """`hf:NAME[:SPLIT]` goes through `datasets.load_dataset`; a local dataset directory needs no network."""
    pytest.importorskip("datasets")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("".join(json.dumps(_jsonl_record(i)) + "\n" for i in range(4)))
    examples = read_examples(f"hf:{tmp_path / 'ds'}:train", shard=(0, 2))
    assert [ex.tokens[1] for ex in examples] == ["w0", "w2"]
    assert examples[0].entities == ((0, 0, "person"), (4, 4, "location"))
    assert examples[0].relations == ((0, 1, "lives in"),) and "record 0" in examples[0].source
