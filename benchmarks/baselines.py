"""The source trees a benchmark compares: this checkout's package and, with ``--baseline DIR``, an
earlier commit's checkout (``git worktree add /tmp/base COMMIT``), each run in its own processes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def source_trees(parser: argparse.ArgumentParser, baseline: str | None) -> dict[str, Path]:
    """``{"streamseg": this checkout}``, plus ``"baseline"``: DIR; a DIR with no streamseg package in it
    is refused as a usage error, before anything runs."""
    trees = {"streamseg": ROOT}
    if baseline:
        if not (Path(baseline) / "streamseg" / "__init__.py").is_file():
            parser.error(f"--baseline {baseline}: no streamseg package there")
        trees["baseline"] = Path(baseline).resolve()
    return trees


def child_result(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python process with ``args`` and return the JSON object its last line of
    output prints (a measurement in a process of its own, whose tree alone it imported)."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
