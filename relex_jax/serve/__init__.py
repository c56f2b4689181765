"""`relex-jax serve`: an HTTP JSON API over `RelexModel.inference`, with dynamic batching.

  schema.py    `ServeConfig` (limits, batching, warm-up, request defaults) and the request parser:
               every request is validated whole before it is queued
  batcher.py   the model's one worker thread: warm-up of the shape buckets, then dynamic batching
               of compatible requests into one `inference` call each
  metrics.py   counters and histograms, rendered in Prometheus' text format
  app.py       the Starlette application (`POST /v1/extract`, `GET /health`, `GET /metrics`)
  client.py    `Client`: the same call as `RelexModel.inference`, run by a server

Starlette, uvicorn and httpx are the `serve` extra (`pip install relex-jax[serve]`); nothing
outside this package imports them, and this package imports them only where they are used.
"""

from __future__ import annotations

_LAZY = {"Client": "client", "ServeError": "client", "create_app": "app", "ServeConfig": "schema"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Client", "ServeConfig", "ServeError", "create_app"]
