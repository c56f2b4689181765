"""`relex-jax serve` through a real HTTP client over loopback: results equal `RelexModel.inference`,
concurrent clients with mixed label sets are batched and answered correctly, bad input gets its
4xx while the server keeps serving, a failing model call fails only its own requests, and
requests during the warm-up get 503.

One tiny model (the tests' gliner fixture) is served by uvicorn in a thread on an ephemeral
port; a proxy around the model (`Controlled`) can hold the worker (to queue requests
deterministically) or inject a failure, without any hook in the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time

import jax
import pytest

pytest.importorskip("torch")
pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from gliner_fixtures import build_relex_model, reference_forward  # noqa: E402
from test_cli import approx_scores  # noqa: E402
from test_relex_parity import LABELS, RELATIONS, TEXTS, moderate_threshold  # noqa: E402

from relex_jax import RelexModel  # noqa: E402
from relex_jax.serve import Client, ServeConfig, ServeError, create_app  # noqa: E402
from relex_jax.settings import InferenceSettings  # noqa: E402

BATCH_SIZE = 4  # rows per forward: warm-up compiles 1, 2 and 4 rows
FAIL_MARK = "BOOM"  # a text holding it makes `Controlled.inference` raise


class Controlled:
    """The served model, behind a gate the test can close (the worker then waits inside
    `inference`, so requests queue) and with a failure injected for texts holding `FAIL_MARK`."""

    def __init__(self, model: RelexModel, open_gate: bool = True):
        self.model = model
        self.gate, self.inside = threading.Event(), threading.Event()
        if open_gate:
            self.gate.set()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def inference(self, texts, *args, **kwargs):
        self.inside.set()
        assert self.gate.wait(timeout=120), "the test never opened the gate"
        if any(FAIL_MARK in text for text in texts):
            raise RuntimeError("injected failure")
        return self.model.inference(texts, *args, **kwargs)


@contextlib.contextmanager
def serving(model, config: ServeConfig):
    """uvicorn serving `create_app(model, config)` in a thread on a free loopback port: its URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(model, config), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="module")
def relex(tmp_path_factory):
    """The tiny relex model (one device: rows need not split over the 8 simulated ones) and an
    entity threshold at which about a quarter of the spans pass."""
    model, path = build_relex_model(tmp_path_factory.mktemp("serve") / "model", seed=0)
    threshold = moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))
    return RelexModel.from_pretrained(path, devices=jax.devices()[:1]), threshold


def config_for(threshold: float, **limits) -> ServeConfig:
    """Small limits so that every one can be crossed cheaply; warm-up of texts up to 16 words."""
    settings = dict(defaults=InferenceSettings(threshold=threshold, batch_size=BATCH_SIZE), labels=LABELS,
                    relations=RELATIONS, max_body_bytes=16384, max_texts=8, max_labels=4, max_words=40,
                    max_batch_texts=8, max_wait_ms=50, warmup_words=16)
    return ServeConfig(**{**settings, **limits})


@pytest.fixture(scope="module")
def served(relex):
    """(URL, the `Controlled` model) of the module's server, ready."""
    model, threshold = relex
    controlled = Controlled(model)
    with serving(controlled, config_for(threshold)) as url:
        with Client(url) as client:
            client.wait_ready(timeout=300)
        yield url, controlled


def metric(text: str, name: str) -> float:
    """One sample of /metrics' text (`name` with its labels, as written there)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_warmup_answers_503_then_serves(relex, caplog):
    """While the worker is held inside the warm-up, /v1/extract and /health answer 503 (the
    documented choice: no waiting); afterwards the warm-up has logged every (rows, words) step
    and the warmed shapes are compiled, and requests are answered."""
    model, threshold = relex
    controlled = Controlled(model, open_gate=False)
    with caplog.at_level(logging.INFO, logger="relex_jax.serve"), serving(controlled, config_for(threshold)) as url:
        assert controlled.inside.wait(timeout=60)  # the warm-up is running, held at the gate
        response = httpx.post(f"{url}/v1/extract", json={"texts": TEXTS[:1]})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "warming up" in response.json()["error"]
        assert httpx.get(f"{url}/health").status_code == 503
        with Client(url) as client:
            assert client.health()["status"] == "warming up"
            assert metric(client.metrics(), "relex_ready") == 0
            controlled.gate.set()
            assert client.wait_ready(timeout=300)["status"] == "ready"
            assert metric(client.metrics(), "relex_ready") == 1
            entities, relations = client.inference(TEXTS[:1], threshold=threshold)
    assert (entities, relations) == model.inference(TEXTS[:1], LABELS, RELATIONS, threshold=threshold)
    steps = {(int(r), int(w)) for r, w in re.findall(r"warm-up: (\d) text\(s\) of (\d+) words", caplog.text)}
    assert steps == {(rows, words) for rows in (1, 2, 4) for words in (1, 16)}
    warmed = {(shapes[0][0], shapes[4][1]) for shapes, cap in model.compiled_shapes if cap == 8}
    assert {(rows, 16) for rows in (1, 2, 4)} <= warmed  # (rows, word bucket)
    assert "warm-up done" in caplog.text


def test_results_equal_inference(served, relex):
    """Through raw HTTP and through `Client`: the response dicts are `RelexModel.inference`'s on
    the same inputs, options included (windows, nested entities, class probabilities, per-text
    labels with descriptions, entities only)."""
    url, _ = served
    model, threshold = relex
    response = httpx.post(f"{url}/v1/extract", json={"texts": TEXTS, "labels": LABELS, "relations": RELATIONS,
                                                     "threshold": threshold})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    expected = model.inference(TEXTS, LABELS, RELATIONS, threshold=threshold, batch_size=BATCH_SIZE)
    assert sum(map(len, expected[0])) > 0 and sum(map(len, expected[1])) > 0  # not vacuous
    assert response.json() == {"entities": expected[0], "relations": expected[1]}

    per_text = [{"PER": "person", "ORG": "organization"}, ["location", "person"]]
    options = dict(flat_ner=False, return_class_probs=True, window_size=8, window_stride=4, relation_threshold=0.3)
    with Client(url) as client:
        got = client.inference(TEXTS[:2], per_text, RELATIONS[:1], threshold=threshold, **options)
        assert got == model.inference(TEXTS[:2], per_text, RELATIONS[:1], threshold=threshold, batch_size=BATCH_SIZE,
                                      **options)
        assert any("class_probs" in e for text in got[0] for e in text)
        only = client.inference(TEXTS[1], threshold=threshold, return_relations=False)  # one string, server's labels
        assert only == model.inference(TEXTS[1], LABELS, RELATIONS, threshold=threshold, batch_size=BATCH_SIZE,
                                       return_relations=False)


# Mixed label sets of the concurrency test: the same slot counts (3 entity types -> 4 slots,
# at most 2 relation types -> 2 slots), so the warmed shapes serve them.
LABEL_SETS = [
    (None, None),  # the server's defaults: LABELS, RELATIONS
    (LABELS[::-1], RELATIONS[:1]),
    ({"person": "people", "organization": "company", "location": "place"}, []),
    (["person", "location", "date"], RELATIONS[::-1]),
]


def test_concurrent_clients_are_batched_and_correct(served, relex):
    """32 clients at once (each its own connection), mixed label sets and one or two texts each:
    every answer equals `inference` on that request alone (scores within float32 rounding: a
    shared batch pads differently), and calls held more than one request."""
    url, _ = served
    model, threshold = relex
    short = [text for text in TEXTS if len(text.split()) <= 12]
    requests = [(short[i % len(short) : i % len(short) + 1 + i % 2], *LABEL_SETS[i % len(LABEL_SETS)])
                for i in range(32)]
    with Client(url) as client:
        before = client.metrics()
    answers, errors = [None] * len(requests), []
    barrier = threading.Barrier(len(requests))

    def run(i):
        texts, labels, relations = requests[i]
        try:
            with Client(url) as client:
                barrier.wait()
                answers[i] = client.inference(texts, labels, relations, threshold=threshold)
        except Exception as exc:  # reported below, with the request
            errors.append((i, exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for (texts, labels, relations), answer in zip(requests, answers):
        expected = model.inference(texts, LABELS if labels is None else labels,
                                   RELATIONS if relations is None else relations, threshold=threshold)
        assert list(answer) == approx_scores(list(expected)), (texts, labels, relations)
    assert sum(len(e) for answer in answers for text in answer[0] for e in text) > 0

    with Client(url) as client:
        after = client.metrics()

    def grown(name):
        return metric(after, name) - metric(before, name)

    calls = grown("relex_batch_requests_count")
    assert grown("relex_batch_requests_sum") == len(requests) and calls < len(requests)  # batches of > 1 request
    assert grown('relex_batch_requests_bucket{le="1.0"}') < calls
    assert grown('relex_requests_total{path="/v1/extract",status="200"}') == len(requests)
    assert grown("relex_request_duration_seconds_count") == len(requests)
    assert metric(after, "relex_compiled_shapes") == len(model.compiled_shapes) >= 3


BAD_REQUESTS = [
    # (id, body bytes or a JSON value, status, a word of the message)
    ("malformed_json", b'{"texts": ["a"', 400, "not valid JSON"),
    ("not_utf8", b'{"texts": ["\xff"]}', 400, "not valid JSON"),
    ("not_an_object", [1, 2], 422, "JSON object"),
    ("unknown_field", {"texts": ["a"], "batch_size": 4}, 422, "--batch-size"),
    ("no_texts", {"labels": LABELS}, 422, "texts"),
    ("empty_texts", {"texts": []}, 422, "texts"),
    ("texts_wrong_type", {"texts": 5}, 422, "texts"),
    ("text_not_string", {"texts": ["a", 3]}, 422, "text 1 is a int"),
    ("too_many_texts", {"texts": ["a"] * 9}, 422, "--max-texts"),
    ("text_too_long", {"texts": ["a " * 41]}, 422, "--max-words"),
    ("too_many_labels", {"texts": ["a"], "labels": ["a", "b", "c", "d", "e"]}, 422, "--max-labels"),
    ("too_many_relations", {"texts": ["a"], "relations": ["a", "b", "c", "d", "e"]}, 422, "--max-labels"),
    ("labels_wrong_type", {"texts": ["a"], "labels": 5}, 422, "labels"),
    ("empty_label", {"texts": ["a"], "labels": ["person", " "]}, 422, "empty"),
    ("per_text_labels_count", {"texts": ["a", "b"], "labels": [["person"]]}, 422, "one entry per text"),
    ("threshold_above_1", {"texts": ["a"], "threshold": 1.5}, 422, "threshold"),
    ("threshold_string", {"texts": ["a"], "threshold": "0.5"}, 422, "threshold"),
    ("threshold_null", {"texts": ["a"], "threshold": None}, 422, "threshold"),
    ("relation_threshold_negative", {"texts": ["a"], "relation_threshold": -0.1}, 422, "relation_threshold"),
    ("flag_not_bool", {"texts": ["a"], "flat_ner": "yes"}, 422, "flat_ner"),
    ("window_size_float", {"texts": ["a"], "window_size": 2.5}, 422, "window_size"),
    ("windows_overlap_too_little", {"texts": ["a"], "window_size": 8, "window_stride": 8}, 422, "overlap"),
    ("long_texts_unknown", {"texts": ["a"], "long_texts": "split"}, 422, "long_texts"),
    ("input_spans_malformed", {"texts": ["a"], "input_spans": [[{"start": "0", "end": 1}]]}, 422, "input_spans"),
]


@pytest.mark.parametrize("body, status, word", [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_4xx(served, body, status, word):
    url, _ = served
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{url}/v1/extract", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert word in response.json()["error"]


def test_limits_and_routes_answer_json_and_the_server_keeps_serving(served, relex):
    """Bodies over the limit (declared or streamed without a length), unknown paths and methods:
    JSON errors; the server still answers correctly afterwards, and /metrics counts them."""
    url, _ = served
    model, threshold = relex
    big = json.dumps({"texts": ["word " * 4000]}).encode()
    with httpx.Client(base_url=url) as http:
        declared = http.post("/v1/extract", content=big)
        assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]
        streamed = http.post("/v1/extract", content=iter([big[:10000], big[10000:]]))  # chunked: no Content-Length
        assert streamed.status_code == 413 and "--max-body-bytes" in streamed.json()["error"]
        assert http.get("/v2/extract").status_code == 404 and "error" in http.get("/nowhere").json()
        wrong_method = http.get("/v1/extract")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        metrics = http.get("/metrics").text
    assert metric(metrics, 'relex_requests_total{path="/v1/extract",status="413"}') >= 2
    assert metric(metrics, 'relex_requests_total{path="other",status="404"}') >= 2
    with Client(url) as client:
        assert client.health()["status"] == "ready"
        assert client.inference(TEXTS[:2], threshold=threshold) == model.inference(
            TEXTS[:2], LABELS, RELATIONS, threshold=threshold, batch_size=BATCH_SIZE)


def test_failing_call_fails_only_its_request(served, relex, caplog):
    """The worker is held while a failing request and four good ones queue: they run as one call,
    which raises; run again one by one, the failing request gets a JSON 500 and the others
    their results. The server then goes on serving."""
    url, controlled = served
    model, threshold = relex
    bodies = [{"texts": [TEXTS[i % 4]], "threshold": threshold} for i in range(4)]
    bodies.insert(2, {"texts": [f"{FAIL_MARK} {TEXTS[0]}"], "threshold": threshold})
    answers = [None] * (len(bodies) + 1)
    controlled.gate.clear()
    controlled.inside.clear()

    def post(i, body):
        answers[i] = httpx.post(f"{url}/v1/extract", json=body, timeout=300)

    plug = threading.Thread(target=post, args=(len(bodies), bodies[0]))  # occupies the worker at the gate
    plug.start()
    assert controlled.inside.wait(timeout=60)
    threads = [threading.Thread(target=post, args=(i, body)) for i, body in enumerate(bodies)]
    with Client(url) as client, caplog.at_level(logging.WARNING, logger="relex_jax.serve"):
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while metric(client.metrics(), "relex_queued_requests") < len(bodies):
            assert time.monotonic() < deadline, "the requests did not queue"
            time.sleep(0.02)
        controlled.gate.set()
        for thread in [plug, *threads]:
            thread.join(timeout=300)
    assert f"a call of {len(bodies)} requests failed" in caplog.text
    for body, response in zip(bodies + [bodies[0]], answers):
        if FAIL_MARK in body["texts"][0]:
            assert response.status_code == 500 and "injected failure" in response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            expected = model.inference(body["texts"], LABELS, RELATIONS, threshold=threshold)
            assert response.json() == approx_scores({"entities": expected[0], "relations": expected[1]})
    with Client(url) as client:
        with pytest.raises(ServeError) as failed:
            client.inference([FAIL_MARK], threshold=threshold)
        assert failed.value.status == 500
        assert client.inference(TEXTS[:1], threshold=threshold)[0] == model.inference(
            TEXTS[:1], LABELS, RELATIONS, threshold=threshold)[0]


def test_cli_refuses_bad_options_before_loading_the_model(capsys):
    from relex_jax import cli

    assert cli.main(["serve", "--model", "nowhere", "--max-wait-ms", "-1"]) == 2
    assert "max_wait_ms must be a number >= 0" in capsys.readouterr().err
    assert cli.main(["serve", "--model", "nowhere", "--labels", "person,,place"]) == 2
    assert "--labels: item 2" in capsys.readouterr().err
    assert cli.main(["serve", "--model", "nowhere", "--threshold", "2"]) == 2
    assert "threshold must be a probability" in capsys.readouterr().err
