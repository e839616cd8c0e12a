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

import sys
import threading
import time
from pathlib import Path

from baselines import ROOT, forward_pass_benchmark

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
    from streamseg.runtime.allocator import keep_freed_memory
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
    forward_pass_benchmark(__file__, __doc__, SETTINGS, child,
                           lambda r: f"{r['ms']:.1f} ms a frame, {r['sleeps']:.0f} sleeps a batch",
                           {"ms": "ms a frame", "sleeps": "sleeps a batch"}, ("alone", "beside"))


if __name__ == "__main__":
    main()
