"""Shared by the crash tests: start a process and SIGKILL it as soon as it has committed something."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_once_written(command: list[str], marker: Path, *, cwd, env, timeout: float = 600) -> None:
    """Run `command`, SIGKILL it once `marker` exists, and check that it was the kill that ended it
    (not a finished run or a crash before `marker` was written)."""
    victim = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not marker.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
