"""The persistent compilation cache: where it goes, how it is switched off, that the commands turn it
on before they compile, and that a second process compiles nothing the first one did."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from relex_jax import cli
from relex_jax.compilation_cache import ENV_VAR, enable_compilation_cache
from relex_jax.data.synthetic import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(autouse=True)
def jax_cache_settings(monkeypatch):
    """No RELEX_JAX_COMPILATION_CACHE from outside; JAX's cache settings restored afterwards."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    saved = {name: getattr(jax.config, name) for name in SETTINGS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_explicit_directory_wins_over_the_environment_and_caches_every_program(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    directory = enable_compilation_cache(str(tmp_path / "explicit"))
    assert directory == tmp_path / "explicit" and directory.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(directory)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    assert not (tmp_path / "from_env").exists()


@pytest.mark.parametrize("off", ["off", "none", "0", "OFF"])
def test_off_disables_explicitly_or_through_the_environment(off, tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    assert enable_compilation_cache(off) is None
    monkeypatch.setenv(ENV_VAR, off)
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "from_env").exists()


def test_environment_directory_then_xdg_then_home_default(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert enable_compilation_cache() == tmp_path / "from_env"
    monkeypatch.delenv(ENV_VAR)
    assert enable_compilation_cache() == tmp_path / "xdg" / "relex_jax" / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "relex_jax" / "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert enable_compilation_cache() == tmp_path / "home" / ".cache" / "relex_jax" / "xla"


def test_an_unusable_directory_is_a_warning_and_no_cache(tmp_path, caplog):
    before = jax.config.jax_compilation_cache_dir
    (tmp_path / "file").write_text("in the way")  # a file where a directory should be (fails even as root)
    with caplog.at_level(logging.WARNING, logger="relex_jax"):
        assert enable_compilation_cache(str(tmp_path / "file" / "xla")) is None
    assert "XLA compilation cache disabled" in caplog.text
    assert jax.config.jax_compilation_cache_dir == before


class _Stop(Exception):
    """Raised by the stubs in place of the commands' first JAX work."""


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "quickstart"])
def test_each_command_enables_the_cache_before_it_compiles(command, tmp_path, monkeypatch):
    import relex_jax.inference
    import relex_jax.quickstart
    import relex_jax.training.loop

    seen = []

    def first_jax_work(*args, **kwargs):
        seen.append(jax.config.jax_compilation_cache_dir)
        raise _Stop

    monkeypatch.setattr(relex_jax.training.loop, "train", first_jax_work)
    monkeypatch.setattr(relex_jax.inference.RelexModel, "from_pretrained", first_jax_work)
    monkeypatch.setattr(relex_jax.quickstart, "run", first_jax_work)
    (tmp_path / "in.txt").write_text("Ada lives in Paris .\n")
    write_jsonl(tmp_path / "gold.jsonl", 2)
    argv = {
        "train": ["--workdir", str(tmp_path / "run")],
        "predict": ["--model", "m", "--labels", "person", "--input", str(tmp_path / "in.txt"),
                    "--output", str(tmp_path / "out.jsonl")],
        "evaluate": ["--model", "m", "--data", str(tmp_path / "gold.jsonl")],
        "quickstart": ["--workdir", str(tmp_path / "quick")],
    }[command]
    with pytest.raises(_Stop):
        cli.main([command, *argv, "--compilation-cache", str(tmp_path / "cache")])
    assert seen == [str(tmp_path / "cache")]


CHILD = """
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from relex_jax.compilation_cache import enable_compilation_cache

events = {"/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/cache_misses": 0}

def count(event, **kwargs):
    if event in events:
        events[event] += 1

monitoring.register_event_listener(count)
enable_compilation_cache(sys.argv[1])
value = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.arange(12.0).reshape(3, 4) / 10)
print(json.dumps({"value": float(value), "hits": events["/jax/compilation_cache/cache_hits"],
                  "misses": events["/jax/compilation_cache/cache_misses"]}))
"""


def test_a_second_process_loads_everything_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", ENV_VAR)} | {"JAX_PLATFORMS": "cpu"}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", CHILD, str(cache)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    written = sorted(p.name for p in cache.iterdir())
    assert first["hits"] == 0 and first["misses"] >= 1 and len(written) == first["misses"]
    second = run()
    assert second == {"value": first["value"], "hits": first["misses"], "misses": 0}
    assert sorted(p.name for p in cache.iterdir()) == written
