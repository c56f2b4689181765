"""Shared by the benchmark scripts: timing and recording results in benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
REPO = Path(__file__).resolve().parent.parent


def timed(fn) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def finish(title: str, command: str, table: str, summary: str, record: bool, started: float) -> None:
    """Print (and with `record` append to RESULTS.md) the result, or the Markdown to paste; then the wall time."""
    print()
    if record:
        report(title, command, table, summary, record=True)
        print("\n(appended to benchmarks/RESULTS.md)")
    else:
        print("Markdown for benchmarks/RESULTS.md:\n")
        print(f"## {title} ({datetime.date.today().isoformat()})\n\nCommand: `{command}`\n\n{table}\n\n{summary}.")
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")


def report(title: str, command: str, table: str, summary: str, record: bool, results: Path = RESULTS) -> None:
    """Print the result; with `record`, append it to `results` (RESULTS.md) under a dated heading."""
    print(table)
    print(summary)
    if not record:
        return
    if not results.exists():
        results.write_text("# Benchmark results\n\nEach entry was produced by the command it shows.\n")
    with results.open("a") as f:
        f.write(f"\n## {title} ({datetime.date.today().isoformat()})\n\nCommand: `{command}`\n\n{table}\n\n{summary}.\n")


def measure(argv: list[str], log: Path) -> dict:
    """Run `argv` (cwd = repo root) to completion; its wall time and peak RSS from wait4 (the
    kernel's high-water mark of that process)."""
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")
    return {"peak": usage.ru_maxrss * 1024, "wall": wall, "log": log.read_text(errors="replace")}
