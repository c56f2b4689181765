"""JAX's persistent compilation cache, on by default for the commands that compile.

One XLA compilation costs ~20 s on a 2-core CPU for a small model and far more for a large one
on a TPU; with the cache a later run that meets the same programs loads them from disk instead.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

ENV_VAR = "RELEX_JAX_COMPILATION_CACHE"
OFF = ("off", "none", "0")

logger = logging.getLogger("relex_jax")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/relex_jax/xla`, or `~/.cache/relex_jax/xla`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relex_jax" / "xla"


def enable_compilation_cache(setting: str | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at a directory; return it, or None when off.

    `setting` (a directory, or "off" / "none" / "0") wins over $RELEX_JAX_COMPILATION_CACHE (same
    values), which wins over `default_cache_dir()`. Every program is cached, however small or quick
    to compile. A directory that cannot be written is a warning: the run goes on without the cache.
    Call it before the first compilation.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if setting is None:
        setting = os.environ.get(ENV_VAR) or None
    if setting is not None and setting.strip().lower() in OFF:
        logger.info("XLA compilation cache: off")
        return None
    directory = Path(setting).expanduser().resolve() if setting else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()  # writable, not only present
    except OSError as err:
        logger.warning("XLA compilation cache disabled: cannot write to %s (%s)", directory, err)
        return None
    if jax.config.jax_compilation_cache_dir != str(directory):
        compilation_cache.reset_cache()  # a cache already opened on another directory would stay there
        jax.config.update("jax_compilation_cache_dir", str(directory))
        logger.info("XLA compilation cache: %s", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, no override
    return directory
