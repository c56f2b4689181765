"""gliner's documented relex examples, run with `RelexModel` in place of `GLiNER` on one local
converted checkpoint, give gliner's results on the same checkpoint.

The examples (texts, labels, calls and the way their output is read) come from the GLiNER
repository, https://github.com/urchade/GLiNER at commit c2bb58ddf569480ef7a9de03bef653723a42f5c2
(docs last changed in ad3f42c5bcf2a735ddf87ad55f1f461aaf8b1d19):

- docs/usage.md, "Relation Extraction Models": `inference` with entity and relation labels, then
  each relation's arguments looked up by `entity_idx` (`test_usage_relation_extraction`);
- docs/usage.md, "Adjusting the Threshold": `predict_entities` with `threshold`,
  `adjacency_threshold` and `relation_threshold` (`test_usage_three_thresholds`);
- docs/architectures.md, "GLiNER for Relation Extraction (UniEncoderSpanRelex)", Example Usage
  (`test_architectures_span_relex`);
- docs/architectures.md, "GLiNER Token-Level for Relation Extraction (UniEncoderTokenRelex)",
  Example Usage, which reads the argument texts from the relation dicts
  (`test_architectures_token_relex`). relex-jax has no token-level model: the same calls run on
  the span checkpoint.
- docs/training.md, "Relation Extraction Dataset Format": its record is scored with `evaluate`
  in tests/test_gliner_compat.py.

The docs load hub models (`GLiNER.from_pretrained("knowledgator/gliner-relex-large-v0.5")`); here
both libraries load one tiny random checkpoint from a local directory (no network in tests), so
the documented "Expected Output" is not what comes out: the test compares the two libraries.
"""

from __future__ import annotations

import pytest

from gliner_fixtures import build_relex_model
from test_decoding import assert_same_dicts

from relex_jax import RelexModel

pytest.importorskip("torch")

# Scores: float32 parity is 1e-5 relative to the logit scale (entity logits reach ~10 on this
# checkpoint, measured differences up to 6e-5), and a probability moves by at most a quarter of
# its logit's change: 2.5e-5. (1.3e-5 was seen here, on "John Smith works at Microsoft".)
TOL = 3e-5

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(gliner's model, ours), both loaded from the same local gliner directory."""
    from gliner import GLiNER

    # seed 3: every example finds entities and relations at the documented thresholds
    _, path = build_relex_model(tmp_path_factory.mktemp("docs") / "model", seed=3)
    return GLiNER.from_pretrained(str(path), local_files_only=True), RelexModel.from_pretrained(str(path))


def display(entities, relations, by_index: bool) -> list[str]:
    """The docs' printing loops, as lines: entity text and label, then each relation as
    "head --[relation]--> tail", the arguments looked up by `entity_idx` (usage.md,
    architectures.md span relex) or read from the relation dict (token relex)."""
    lines = [f"{entity['text']} ({entity['label']})" for entity in entities[0]]
    for relation in relations[0]:
        if by_index:
            head, tail = entities[0][relation["head"]["entity_idx"]], entities[0][relation["tail"]["entity_idx"]]
        else:
            head, tail = relation["head"], relation["tail"]
        lines.append(f"{head['text']} --[{relation['relation']}]--> {tail['text']}")
    return lines


def run_inference_example(models, text: str, entity_labels, relation_labels, by_index: bool):
    model, relex = models
    results = [
        m.inference([text], labels=entity_labels, relations=relation_labels, threshold=0.5, relation_threshold=0.5)
        for m in (relex, model)
    ]
    (ours_entities, ours_relations), (entities, relations) = results
    assert_same_dicts(ours_entities, entities, tol=TOL)
    assert_same_dicts(ours_relations, relations, tol=TOL)
    assert display(ours_entities, ours_relations, by_index) == display(entities, relations, by_index)
    assert entities[0] and relations[0]  # not vacuous


def test_usage_relation_extraction(models):
    text = "Bill Gates founded Microsoft in 1975. The company is headquartered in Redmond."
    run_inference_example(models, text, ["person", "organization", "date", "location"],
                          ["founded", "founded_in", "headquartered_in"], by_index=True)


def test_usage_three_thresholds(models):
    model, relex = models
    text = "Apple Inc. is a technology company founded in 1976."
    labels = ["company", "industry", "date"]
    relations = ["founded in"]
    ours, results = (
        m.predict_entities(text, labels, relations=relations, threshold=0.3, adjacency_threshold=0.25,
                           relation_threshold=0.7)
        for m in (relex, model)
    )
    assert_same_dicts([ours], [results], tol=TOL)
    assert results


def test_architectures_span_relex(models):
    text = "John Smith works at Microsoft in Seattle."
    run_inference_example(models, text, ["person", "organization", "location"],
                          ["works_at", "located_in"], by_index=True)


def test_architectures_token_relex(models):
    text = """The Phase III clinical trial conducted by Pfizer and BioNTech 
demonstrated that the BNT162b2 vaccine achieved 95% efficacy against 
COVID-19 in participants without prior infection."""  # noqa: W291 (the docs' trailing spaces, kept)
    run_inference_example(models, text, ["organization", "vaccine", "disease", "metric"],
                          ["developed_by", "effective_against", "measured_as"], by_index=False)

