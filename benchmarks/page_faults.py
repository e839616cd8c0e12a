"""Page faults of the CPU forward pass in a thread, with glibc's defaults and with freed memory kept.

A pipeline runs its forward pass in the infer thread, whose large temporaries glibc hands back to the OS
after each batch, so they return as fresh pages (see ``streamseg/allocator.py``). This times the sample
model's forward pass in a thread, each setting in its own process, alternated for ``--rounds``; it
prints ms a frame, minor faults a frame and the process's system time. Run by hand:

    python benchmarks/page_faults.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

from baselines import ROOT

SETTINGS = ("default", "kept")


def child(setting: str, batch: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(ROOT))
    from streamseg.allocator import keep_freed_memory
    from streamseg.inference.loading import load_model

    if setting == "kept":
        keep_freed_memory()
    loaded = load_model(str(ROOT / "samples" / "model"), device="cpu")
    pixels = torch.randn(batch, 3, *size)
    out: dict[str, float] = {}

    def run() -> None:
        with torch.inference_mode():
            for _ in range(3):  # first-call costs
                loaded.model(pixel_values=pixels)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(repeats):
                loaded.model(pixel_values=pixels)
            frames = repeats * batch
            out["ms"] = (time.perf_counter() - start) / frames * 1000
            out["faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / frames

    thread = threading.Thread(target=run)  # as the pipeline's infer thread runs it
    thread.start()
    thread.join()
    out["sys_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime
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
            print(f"round {r + 1} {setting}: {result['ms']:.1f} ms a frame, {result['faults']:.0f} faults a frame, "
                  f"system time {result['sys_s']:.2f} s", flush=True)
    print(f"\nsample model forward pass in a thread, batch {args.batch_size} at {args.input_size} (median of {args.rounds})")
    for setting in SETTINGS:
        rows = results[setting]
        print(f"  {setting:8s} {statistics.median(r['ms'] for r in rows):7.1f} ms a frame "
              f"{statistics.median(r['faults'] for r in rows):8.0f} faults a frame "
              f"{statistics.median(r['sys_s'] for r in rows):6.2f} s system time")
    ratios = [k["ms"] / d["ms"] for k, d in zip(results["kept"], results["default"])]
    print(f"kept / default, time a frame: {statistics.median(ratios):.2f} (each round: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
