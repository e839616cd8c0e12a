"""``bench.py live``: how cameras share the model, each camera's frames out and latency when several run
at once.

The batcher decides which source's frames go into each batch; a live source loses what waits, so its
share of the model is its frame rate. Scenarios, each a CLI run of ``--seconds`` with the sample model
over real RTSP cameras (GStreamer's server, as the tests use: 320x180): a file beside a 25 fps camera; a
25 fps camera beside a 2 fps one; three 25 fps cameras and a 2 fps one in batches of two. Each tree runs
in its own process, alternated for ``--rounds``; the figures are the run's own closing lines (fps out and
latency p50 over its last seconds), medians of the rounds. Run by hand:

    python benchmarks/bench.py live --seconds 10 --rounds 2 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, provenance, source_trees, tree_env

SCENARIOS = {
    "file+camera": (["samples/shapes.mp4", "cam:fast"], []),
    "fast+slow": (["cam:fast", "cam:slow"], []),
    "four, batch 2": (["cam:fast", "cam:fast2", "cam:fast3", "cam:slow"], ["--batch-size", "2"]),
}
MOUNTS = ("fast:25", "fast2:25", "fast3:25", "slow:2")
CLOSING = re.compile(r"^(\S+): ended.*?(\d+) frames, in ([\d.]+) fps, out ([\d.]+) fps, dropped (\d+), "
                     r"latency p50 (\d+) ms")


def run(tree: Path, sources: list[str], extra: list[str], seconds: float, cameras) -> dict[str, list[float]]:
    """One CLI run of ``tree``'s package: each source's [fps out, latency p50 ms], by its name."""
    urls = [cameras.url(s.split(":", 1)[1]) if s.startswith("cam:") else str(ROOT / s)
            for s in sources]
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-m", "streamseg", "segment", *urls, "--config", str(ROOT / "configs" / "sample.yaml"),
             "--duration", str(seconds), "--no-progress", "-o", str(Path(out) / "out.mp4"), *extra],
            capture_output=True, text=True, timeout=seconds + 120, check=False, env=tree_env(tree))
    found = {m[1]: [float(m[4]), float(m[6])] for line in proc.stderr.splitlines() if (m := CLOSING.match(line))}
    if proc.returncode or len(found) != len(sources):
        sys.exit(f"run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return found


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py live", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", metavar="DIR", help="also run the package in this tree")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    trees = source_trees(parser, args.baseline)
    from streamseg.testing.cameras import RtspServer  # the tests' own cameras

    cameras = RtspServer(*MOUNTS).start()
    found: dict[str, dict[str, list]] = {}
    try:
        for scenario, (sources, extra) in SCENARIOS.items():
            rows: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    rows[name].append(run(tree, sources, extra, args.seconds, cameras))
            found[scenario] = rows
            print(f"\n{scenario} ({' '.join(extra) or 'default batch'}), median of {args.rounds} rounds:")
            for name, results in rows.items():
                cells = [f"{source} {statistics.median(r[source][0] for r in results):.1f} fps "
                         f"p50 {statistics.median(r[source][1] for r in results):.0f} ms" for source in results[0]]
                print(f"  {name:9s} " + " | ".join(cells))
    finally:
        cameras.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({**provenance(), "args": vars(args), "scenarios": found}, indent=2))
