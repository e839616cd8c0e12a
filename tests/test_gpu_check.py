"""The GPU check's steps ask benchmarks/bench.py for what it can do.

A lent GPU comes for 15 minutes, a few sessions apart; a step whose arguments bench.py refuses costs that
run its measurement. ``ARGS_ONLY=1`` makes the script hand each step's arguments, as bash expands them,
to ``bench.py --check-args`` instead of running it, on every branch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(tmp_path: Path, script: Path) -> subprocess.CompletedProcess:
    # The script runs python3: this interpreter, with its packages. A wrapper that execs it, not a symlink:
    # Python started through a link outside a venv finds no pyvenv.cfg and loses the venv's packages.
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "ARGS_ONLY": "1", "OUT": str(tmp_path / "out"), "PATH": f"{python.parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_step_of_the_gpu_check_has_arguments_bench_takes(tmp_path: Path) -> None:
    done = _check(tmp_path, ROOT / "benchmarks" / "gpu_check.sh")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [line.split(":")[0] for line in done.stdout.splitlines() if line.endswith(": arguments taken")]
    assert steps == ["main", "gil", "cpu-decoder", "segments", "fallback", "no-graphs"], done.stdout


def test_a_step_with_arguments_bench_refuses_fails_the_check(tmp_path: Path) -> None:
    """A value that starts with a dash needs ``--variant=...``: argparse takes ``--variant --gpu-frames``
    for two options."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    broken = tmp_path / "gpu_check.sh"
    broken.write_text(script.replace("--variant=--gpu-frames", "--variant --gpu-frames"))
    assert broken.read_text() != script
    done = _check(tmp_path, broken)
    assert done.returncode != 0
    assert "main: arguments refused" in done.stdout


def test_the_steps_time_limits_fit_the_checks_budget(tmp_path: Path) -> None:
    """The device call's limit is 600 s: the steps one run can take must fit the script's budget, which
    leaves the call time to send the results back."""
    done = _check(tmp_path, ROOT / "benchmarks" / "gpu_check.sh")
    line = next(line for line in done.stdout.splitlines() if line.startswith("time limits:"))
    planned, budget = (int(word.rstrip("s")) for word in line.split() if word.rstrip("s").isdigit())
    assert planned <= budget <= 560, line
    over = tmp_path / "over"
    over.mkdir()
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text().replace("bench main 200", "bench main 400")
    (over / "gpu_check.sh").write_text(script)
    assert _check(over, over / "gpu_check.sh").returncode != 0
