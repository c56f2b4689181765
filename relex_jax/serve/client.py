"""`Client`: `RelexModel.inference`'s call, run by a `relex-jax serve` server over HTTP (httpx).

    from relex_jax.serve import Client

    with Client("http://127.0.0.1:8000") as client:
        client.wait_ready()
        entities, relations = client.inference(["Alice works at Acme."], ["person", "organization"],
                                               ["works at"], threshold=0.4)
"""

from __future__ import annotations

import time

import httpx


class ServeError(Exception):
    """An error answer of the server: HTTP `status` and the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class Client:
    """A connection pool to one server. One `Client` per thread is the safe use."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 300.0):
        self._http = httpx.Client(base_url=url, timeout=timeout)

    def inference(self, texts, labels=None, relations=None, **options):
        """As `RelexModel.inference(texts, labels, relations, **options)`: (entities, relations),
        or the entities alone with `return_relations=False`. `labels` / `relations` None: the
        server's defaults. `options` are the request fields (`threshold`, `flat_ner`, ...).
        Raises `ServeError` for an error answer (4xx / 5xx)."""
        body = {"texts": texts, **options}
        if labels is not None:
            body["labels"] = labels
        if relations is not None:
            body["relations"] = relations
        answer = self._answer(self._http.post("/v1/extract", json=body))
        return (answer["entities"], answer["relations"]) if "relations" in answer else answer["entities"]

    def health(self) -> dict:
        """/health's JSON: {"status": "ready" | "warming up", "compiled_shapes": n, ...}."""
        response = self._http.get("/health")
        return response.json() if response.status_code in (200, 503) else self._answer(response)

    def wait_ready(self, timeout: float = 600.0, poll: float = 0.2) -> dict:
        """Poll /health until the server is ready (or not yet listening), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = self.health()
                if health["status"] == "ready":
                    return health
            except httpx.TransportError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self._http.base_url} was not ready after {timeout} s")
            time.sleep(poll)

    def metrics(self) -> str:
        """/metrics' text (Prometheus format)."""
        response = self._http.get("/metrics")
        if response.status_code != 200:
            self._answer(response)
        return response.text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _answer(response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code != 200:
            raise ServeError(response.status_code, body.get("error", response.text) if isinstance(body, dict) else body)
        return body
