"""The model's one worker thread: warm-up at start-up, then dynamic batching.

Requests are queued as jobs (a validated `Extraction` and a future). The worker takes the oldest
job and every later queued job with the same settings (`Extraction.key`: thresholds and options;
label sets may differ, since `inference` takes one label set per text) up to `max_batch_texts`
texts, waiting at most `max_wait_ms` after the oldest job arrived for more to join, and runs them
as one `RelexModel.inference` call. That call sorts their texts by length and runs forwards of
`batch_size` rows, padded to the shape buckets, so texts of different requests share forwards.

A call that raises (validation has already refused everything `inference` would refuse, so
this is a rare, unforeseen failure) is run again request by request: only the requests that fail
alone get the error; the others get their results.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import threading
import time

from relex_jax.data.processor import INFERENCE_BUCKETS
from relex_jax.serve.metrics import Metrics
from relex_jax.serve.schema import Extraction, ServeConfig

logger = logging.getLogger("relex_jax.serve")

# Warm-up texts are this sentence, cycled to the length wanted: ordinary English, so that a real
# tokenizer gives a typical number of tokens per word (and with it the typical token bucket).
WARMUP_WORDS = ("The committee met in Geneva on Tuesday , and its chair , Maria Lopez , said that the agreement with "
                "Acme Corporation would be signed in Paris before the end of March .").split()
PLACEHOLDER_TYPES = 4  # entity and relation types warmed when the server has no default --labels / --relations


class ShuttingDown(Exception):
    """`Batcher.submit` after `stop`."""


@dataclasses.dataclass
class Job:
    request: Extraction
    future: concurrent.futures.Future
    arrived: float  # time.monotonic()


class Batcher:
    """Owns the model: `start` warms it up and serves `submit`ted requests in one thread."""

    def __init__(self, model, config: ServeConfig, metrics: Metrics):
        self.model, self.config, self.metrics = model, config, metrics
        self.ready = threading.Event()  # set when the warm-up is over
        self.warmup_error: str | None = None
        self._pending: collections.deque[Job] = collections.deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="relex-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Run what is queued, then end the worker (a warm-up still running ends after its current step)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def queued(self) -> tuple[int, int]:
        """(requests, texts) waiting for the model."""
        with self._cond:
            return len(self._pending), self._queued_texts

    def submit(self, request: Extraction) -> concurrent.futures.Future:
        """Queue a request; its future gets (entities, relations or None), or the model's exception."""
        job = Job(request, concurrent.futures.Future(), time.monotonic())
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._pending.append(job)
            self._queued_texts += len(request.texts)
            self._cond.notify()
        return job.future

    def _work(self) -> None:
        try:
            warm_up(self.model, self.config, stopping=lambda: self._stopping)
        except Exception as exc:  # the server still serves; shapes compile on first use
            logger.exception("warm-up failed")
            self.warmup_error = f"{type(exc).__name__}: {exc}"
        self.ready.set()
        while (jobs := self._next_batch()) is not None:
            self._run(jobs)

    def _next_batch(self) -> list[Job] | None:
        """The next jobs to run together (None: stopping and nothing queued)."""
        with self._cond:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._pending[0].arrived + self.config.max_wait_ms / 1000
            while True:
                jobs = self._compatible()
                texts = sum(len(job.request.texts) for job in jobs)
                left = deadline - time.monotonic()
                if texts >= self.config.max_batch_texts or left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            for job in jobs:
                self._pending.remove(job)
            self._queued_texts -= texts
        started = time.monotonic()
        for job in jobs:
            self.metrics.queue_seconds.observe(started - job.arrived)
        return jobs

    def _compatible(self) -> list[Job]:
        """The oldest job and the later ones that can join its call, in arrival order."""
        first = self._pending[0]
        jobs, texts = [first], len(first.request.texts)
        for job in itertools.islice(self._pending, 1, None):
            count = len(job.request.texts)
            if job.request.key == first.request.key and texts + count <= self.config.max_batch_texts:
                jobs.append(job)
                texts += count
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        """Run jobs as one call; if it raises, run each alone, so only a failing request fails."""
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not jobs:
            return
        try:
            results = self._call(jobs)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            logger.warning("a call of %d requests failed (%s: %s); running each alone", len(jobs),
                           type(exc).__name__, exc)
            for job in jobs:
                try:
                    job.future.set_result(self._call([job])[0])
                except Exception as alone:
                    job.future.set_exception(alone)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)

    def _call(self, jobs: list[Job]) -> list[tuple]:
        """One `inference` call over the jobs' texts -> per job (entities, relations or None)."""
        requests = [job.request for job in jobs]
        first = requests[0]
        texts = [text for r in requests for text in r.texts]
        labels = [dict(zip(s.names, s.prompts)) for r in requests for s in r.entity_sets]
        relations = [dict(zip(s.names, s.prompts)) for r in requests for s in r.relation_sets]
        spans = None
        if any(r.input_spans is not None for r in requests):
            spans = [s for r in requests for s in (r.input_spans or (None,) * len(r.texts))]
        start = time.monotonic()
        try:
            out = self.model.inference(texts, labels, relations, input_spans=spans,
                                       return_relations=first.return_relations, **dataclasses.asdict(first.settings))
        finally:
            self.metrics.observe_call(len(requests), len(texts), time.monotonic() - start)
        entities, found = out if first.return_relations else (out, None)
        results, at = [], 0
        for r in requests:
            end = at + len(r.texts)
            results.append((entities[at:end], None if found is None else found[at:end]))
            at = end
        return results


def warm_up(model, config: ServeConfig, stopping=lambda: False) -> None:
    """Compile the forward shapes of texts up to `config.warmup_words` words (cut to the model's
    window): for each word bucket, texts of its shortest and its longest length (so the token
    buckets of both ends), at every row count the forwards use (the powers of two below
    `batch_size`, and `batch_size`), with the server's default types (else
    `PLACEHOLDER_TYPES` of each kind) and default options. The entity threshold is 1.0, so no
    span passes and the relation stage compiles at its smallest entity cap; thresholds are
    arguments of the compiled programs, not part of them, so these serve every threshold. Longer
    texts, other type counts and texts with more candidate entities compile on first use (logged
    by `RelexModel.forward`, counted in /metrics). `stopping()` true ends it between steps."""
    if not config.warmup_words:
        logger.info("warm-up off (--warmup-words 0): every shape compiles on first use")
        return
    settings = dataclasses.replace(config.defaults, threshold=1.0)
    longest = min(config.warmup_words, settings.windows(model.config)[0])
    bounds = (0, *INFERENCE_BUCKETS["words"])
    lengths = [n for low, high in itertools.pairwise(bounds) if low < longest
               for n in sorted({low + 1, min(high, longest)})]
    size = settings.batch_size
    rows = [1 << i for i in range(size.bit_length()) if 1 << i < size] + [size]
    labels = config.labels if config.labels is not None else [f"type {i + 1}" for i in range(PLACEHOLDER_TYPES)]
    relations = config.relations if config.relations is not None else [
        f"relation {i + 1}" for i in range(PLACEHOLDER_TYPES)]
    logger.info("warm-up: texts of %s words x %s texts per forward", lengths, rows)
    start, before = time.monotonic(), len(model.compiled_shapes)
    for length in lengths:
        text = " ".join(itertools.islice(itertools.cycle(WARMUP_WORDS), length))
        for count in rows:
            if stopping():
                logger.info("warm-up cut short: the server is shutting down")
                return
            seen, begun = set(model.compiled_shapes), time.monotonic()
            model.inference([text] * count, labels, relations, **dataclasses.asdict(settings))
            new = sorted(model.compiled_shapes - seen)
            logger.info("warm-up: %d text(s) of %d words in %.1f s: %s", count, length, time.monotonic() - begun,
                        "; ".join(map(describe_shape, new)) if new else "already compiled")
    logger.info("warm-up done in %.1f s: %d new forward shapes, %d in all", time.monotonic() - start,
                len(model.compiled_shapes) - before, len(model.compiled_shapes))


def describe_shape(signature) -> str:
    """A `RelexModel.compiled_shapes` entry as text: the model inputs' shapes, then the entity cap."""
    shapes, cap = signature
    return " ".join("x".join(map(str, shape)) for shape in shapes) + f" cap {cap}"
