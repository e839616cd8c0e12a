"""What the scenarios of ``bench.py`` share: the source trees they compare and the child processes that
measure each one.

``--baseline DIR`` names an earlier commit's checkout (``git worktree add /tmp/base COMMIT``); each
measurement runs in a fresh process that imports the package from one tree only (through
``PYTHONPATH``, checked in the child), so that the two are measured side by side on the same machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent / "bench.py"


def source_trees(parser: argparse.ArgumentParser, baseline: str | None) -> dict[str, Path]:
    """``{"streamseg": this checkout}``, plus ``"baseline"``: DIR; a DIR with no streamseg package in it
    is refused as a usage error, before anything runs."""
    trees = {"streamseg": ROOT}
    if baseline:
        if not (Path(baseline) / "streamseg" / "__init__.py").is_file():
            parser.error(f"--baseline {baseline}: no streamseg package there")
        trees["baseline"] = Path(baseline).resolve()
    return trees


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a process that imports streamseg from ``tree`` (and no download is tried)."""
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "STREAMSEG_BENCH_TREE": str(tree), "HF_HUB_OFFLINE": "1"}


def _pin_tree() -> None:
    """In a child: take out the finder of an editable install, which would fill in, from this checkout,
    any module the tree under test lacks (a baseline from before a module moved), and mix the two."""
    if os.environ.get("STREAMSEG_BENCH_TREE"):
        sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]


_pin_tree()


def first_module(*names: str) -> ModuleType:
    """The first of ``names`` that the tree under test has (a module that moved since a baseline)."""
    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    return importlib.import_module(names[-1])


def check_tree() -> None:
    """In a child: refuse to measure a package imported from another tree than the one asked for."""

    wanted = os.environ.get("STREAMSEG_BENCH_TREE")
    found = [m.__file__ for name, m in list(sys.modules.items()) if name.split(".")[0] == "streamseg"
             and getattr(m, "__file__", None)]
    stray = [f for f in found if wanted and not Path(f).resolve().is_relative_to(Path(wanted))]
    if stray:
        raise SystemExit(f"asked for the package in {wanted}, imported {stray[0]}")


def provenance() -> dict[str, str]:
    """What a results file says of where it was measured: the commit (with ``+`` if the tree had changes),
    the machine and the versions."""
    import platform
    import time

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"commit": git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "streamseg") else ""),
            "machine": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def child_result(tree: Path, *args: str) -> dict:
    """Run ``bench.py *args`` in a fresh process with ``tree``'s package, and return the JSON object its last
    line of output prints."""
    proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, env=tree_env(tree))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
