"""The source trees a benchmark compares: this checkout's package and, with ``--baseline DIR``, an
earlier commit's checkout (``git worktree add /tmp/base COMMIT``), each run in its own processes."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
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


def alternated(script: str, settings: Sequence[str], rounds: int, args: Sequence[str],
               say: Callable[[dict], str]) -> dict[str, list[dict]]:
    """Each setting measured by ``script --child SETTING *args`` in a process of its own, the settings
    alternated for ``rounds`` (so that a machine whose speed drifts weighs on each alike); prints
    ``say(result)`` for each as it comes, and returns the results by setting, in round order."""
    results: dict[str, list[dict]] = {s: [] for s in settings}
    for r in range(rounds):
        for setting in settings:
            results[setting].append(child_result(script, "--child", setting, *args))
            print(f"round {r + 1} {setting}: {say(results[setting][-1])}", flush=True)
    return results


def forward_pass_args(doc: str, settings: Sequence[str]) -> argparse.Namespace:
    """The options of a benchmark that times the sample model's forward pass under ``settings``, each
    alternated in a process of its own (``--child`` names the setting of such a process)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--input-size", default="256x448", help="HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=10, help="batches timed")
    parser.add_argument("--child", choices=settings, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.input_size.split("x"))
    args.child_args = ["--batch-size", str(args.batch_size), "--input-size", args.input_size,
                       "--repeats", str(args.repeats)]
    return args


def report(title: str, results: dict[str, list[dict]], columns: dict[str, str], ratio: tuple[str, str]) -> None:
    """Each setting's medians (``columns``: a result's key, and what its figure is), then the time a frame
    (``ms``) of ``ratio[0]`` over ``ratio[1]``, taken within each round."""
    print(f"\n{title} (median of {len(next(iter(results.values())))} rounds)")
    for setting, rows in results.items():
        print(f"  {setting:8s}" + "".join(f" {statistics.median(r[key] for r in rows):9.1f} {what}"
                                          for key, what in columns.items()))
    ratios = [a["ms"] / b["ms"] for a, b in zip(results[ratio[0]], results[ratio[1]])]
    print(f"{ratio[0]} / {ratio[1]}, time a frame: {statistics.median(ratios):.2f} (each round: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")


def forward_pass_benchmark(script: str, doc: str, settings: Sequence[str], child: Callable[..., dict],
                           say: Callable[[dict], str], columns: dict[str, str], ratio: tuple[str, str]) -> None:
    """The whole of a benchmark of the sample model's forward pass under ``settings``: in a ``--child``
    process, ``child(setting, batch, (height, width), repeats)``'s result as JSON; otherwise the settings
    alternated (:func:`alternated`) and their :func:`report`."""
    args = forward_pass_args(doc, settings)
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.size, args.repeats)))
        return
    results = alternated(script, settings, args.rounds, args.child_args, say)
    report(f"sample model forward pass in a thread, batch {args.batch_size} at {args.input_size}", results,
           columns, ratio)
