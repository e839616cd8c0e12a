"""The CPU forward pass in a thread, alone among OpenMP teams or beside a second one.

libgomp shortens its threads' spin-wait to almost nothing once the process holds more of them than
there are cores, and a thread that ran one parallel op keeps its team until it ends (see
``streamseg/inference/threads.py``). This times the sample model's forward pass in a thread, as the
pipeline's infer thread runs it, after the main thread loaded the model either with every core
("beside": it now keeps a team of its own, as before this was handled) or with one torch thread
("alone": what a pipeline does on the CPU). Each setting runs in its own process, alternated for
``--rounds``; it prints ms a frame and how often the forward pass's threads went to sleep (voluntary
context switches a batch). Run by hand:

    python benchmarks/omp_teams.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from baselines import ROOT

SETTINGS = ("beside", "alone")


def _sleeps() -> dict[int, int]:
    """Voluntary context switches of each of this process's threads."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        status = (task / "status").read_text()
        out[int(task.name)] = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return out


def child(setting: str, batch: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(ROOT))
    from streamseg.allocator import keep_freed_memory
    from streamseg.inference.loading import load_model
    from streamseg.inference.threads import set_torch_threads

    keep_freed_memory()
    cores = torch.get_num_threads()
    if setting == "alone":
        set_torch_threads(1)
    loaded = load_model(str(ROOT / "samples" / "model"), device="cpu")
    pixels = torch.randn(batch, 3, *size)
    out: dict[str, float] = {}

    def run() -> None:
        set_torch_threads(cores)
        with torch.inference_mode():
            for _ in range(3):  # first-call costs
                loaded.model(pixel_values=pixels)
            before, start = _sleeps(), time.perf_counter()
            for _ in range(repeats):
                loaded.model(pixel_values=pixels)
            out["ms"] = (time.perf_counter() - start) / (repeats * batch) * 1000
            after = _sleeps()
        out["sleeps"] = sum(after[t] - before[t] for t in after if t in before) / repeats

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--input-size", default="256x448", help="HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=10, help="batches timed")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.input_size.split("x"))
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, size, args.repeats)))
        return
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            cmd = [sys.executable, __file__, "--child", setting, "--batch-size", str(args.batch_size),
                   "--input-size", args.input_size, "--repeats", str(args.repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[setting].append(result)
            print(f"round {r + 1} {setting}: {result['ms']:.1f} ms a frame, {result['sleeps']:.0f} sleeps a batch",
                  flush=True)
    print(f"\nsample model forward pass in a thread, batch {args.batch_size} at {args.input_size} (median of {args.rounds})")
    for setting in SETTINGS:
        rows = results[setting]
        print(f"  {setting:7s} {statistics.median(r['ms'] for r in rows):7.1f} ms a frame "
              f"{statistics.median(r['sleeps'] for r in rows):8.0f} sleeps a batch")
    ratios = [a["ms"] / b["ms"] for a, b in zip(results["alone"], results["beside"])]
    print(f"alone / beside, time a frame: {statistics.median(ratios):.2f} (each round: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
