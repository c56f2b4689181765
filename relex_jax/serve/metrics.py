"""The server's counters and histograms, rendered in Prometheus' text exposition format (0.0.4).

Updated from the event loop (requests) and the model's worker thread (calls), under one lock.
"""

from __future__ import annotations

import bisect
import collections
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...], lock: threading.Lock):
        self.name, self.help, self.buckets, self._lock = name, help_text, buckets, lock
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bucket (+Inf only)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sum += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, count in zip((*map(_number, self.buckets), "+Inf"), self.counts):
            total += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {total}')
        return lines + [f"{self.name}_sum {self.sum!r}", f"{self.name}_count {total}"]


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()  # (path, status)
        self.request_seconds = Histogram(
            "relex_request_duration_seconds", "Time from receiving a /v1/extract request to its response.",
            LATENCY_BUCKETS, self._lock)
        self.queue_seconds = Histogram(
            "relex_queue_seconds", "Time a validated request waited before its model call began.",
            LATENCY_BUCKETS, self._lock)
        self.call_seconds = Histogram(
            "relex_model_call_seconds", "Duration of one model call (one batch of requests).", LATENCY_BUCKETS,
            self._lock)
        self.call_texts = Histogram(
            "relex_batch_texts", "Texts per model call (dynamic batch size in texts).", SIZE_BUCKETS, self._lock)
        self.call_requests = Histogram(
            "relex_batch_requests", "Requests per model call (dynamic batch size in requests).", SIZE_BUCKETS,
            self._lock)

    def count_request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[path, status] += 1
        if path == "/v1/extract":
            self.request_seconds.observe(seconds)

    def observe_call(self, requests: int, texts: int, seconds: float) -> None:
        self.call_requests.observe(requests)
        self.call_texts.observe(texts)
        self.call_seconds.observe(seconds)

    def render(self, ready: bool, compiled_shapes: int, queued_requests: int, queued_texts: int) -> str:
        """The exposition text; the gauges are read by the caller at scrape time."""
        with self._lock:
            lines = ["# HELP relex_requests_total HTTP requests answered, by path and status.",
                     "# TYPE relex_requests_total counter"]
            lines += [f'relex_requests_total{{path="{path}",status="{status}"}} {count}'
                      for (path, status), count in sorted(self.requests.items())]
            for histogram in (self.request_seconds, self.queue_seconds, self.call_seconds, self.call_texts,
                              self.call_requests):
                lines += histogram.render()
        for name, help_text, value in (
            ("relex_ready", "1 once the warm-up is over, 0 while warming up.", int(ready)),
            ("relex_compiled_shapes", "Forward shapes compiled so far (input shapes and entity cap).", compiled_shapes),
            ("relex_queued_requests", "Validated requests waiting for the model.", queued_requests),
            ("relex_queued_texts", "Texts of the requests waiting for the model.", queued_texts),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A bucket bound as Prometheus clients write it (1.0, not 1)."""
    return repr(float(value))
