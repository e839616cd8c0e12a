"""Page faults of the CPU forward pass in a thread, with glibc's defaults and with freed memory kept.

A pipeline runs its forward pass in the infer thread, whose large temporaries glibc hands back to the OS
after each batch, so they return as fresh pages (see ``streamseg/allocator.py``). This times the sample
model's forward pass in a thread, each setting in its own process, alternated for ``--rounds``; it
prints ms a frame, minor faults a frame and the process's system time. Run by hand:

    python benchmarks/page_faults.py --rounds 3
"""

from __future__ import annotations

import resource
import sys
import threading
import time

from baselines import ROOT, forward_pass_benchmark

SETTINGS = ("default", "kept")


def child(setting: str, batch: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(ROOT))
    from streamseg.runtime.allocator import keep_freed_memory
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
    forward_pass_benchmark(__file__, __doc__, SETTINGS, child,
                           lambda r: f"{r['ms']:.1f} ms a frame, {r['faults']:.0f} faults a frame, "
                                     f"system time {r['sys_s']:.2f} s",
                           {"ms": "ms a frame", "faults": "faults a frame", "sys_s": "s system time"},
                           ("kept", "default"))


if __name__ == "__main__":
    main()
