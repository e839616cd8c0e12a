"""Who holds the interpreter lock during a run: py-spy's samples of the lock's holder, summed by thread and by
the Python line that held it.

bench.py's probe says how long a thread waits for the lock; this says who it waits for. ``bench.py
--gil-profile`` runs py-spy on each streamseg run over its timed window (py-spy on the PATH; ``pip install
py-spy``). It samples without stopping the process (``--nonblocking``) and keeps only
samples in which a thread holds the lock (``--gil``), so the samples found over those taken says how much of
the time the lock was held at all. Also run by hand on a saved file:

    python benchmarks/gil_holders.py samples.txt
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

RATE = 200  # samples a second

# The function each pipeline thread runs, as py-spy names it: how a sample's thread is told.
ROLES = {
    "produce": "source", "Pipeline._infer_loop": "infer", "Pipeline._post_loop": "post",
    "Pipeline._sink_loop": "sinks", "Pipeline._output_loop": "output", "_probe_lock": "bench probe",
    "_sample": "bench sampler",
}


def start(path: Path) -> subprocess.Popen | None:
    """py-spy sampling this process into ``path`` (its raw format) until :func:`stop`; None without py-spy."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("gil profile: py-spy is not on the PATH", file=sys.stderr)
        return None
    cmd = [spy, "record", "--gil", "--nonblocking", "--rate", str(RATE), "--pid", str(os.getpid()),
           "--format", "raw", "--output", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(spy: subprocess.Popen, path: Path, seconds: float) -> dict:
    """Stop py-spy as Ctrl-C does (it writes what it has), and summarize ``seconds`` of samples."""
    spy.send_signal(signal.SIGINT)
    try:
        _, err = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return {"error": "py-spy did not stop"}
    if not path.exists():
        return {"error": ((err or "").strip().splitlines() or ["no output"])[-1][:200]}
    return summary(path.read_text(), seconds)


def summary(raw: str, seconds: float | None = None, top: int = 12) -> dict:
    """Samples by thread and by the innermost line (the one holding the lock), largest first."""
    by_role: collections.Counter = collections.Counter()
    by_line: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        names = [f.split(" (")[0] for f in frames]
        role = next((ROLES[n] for n in names if n in ROLES), "other")
        by_role[role] += int(count)
        by_line[f"{role}: {frames[-1]}"] += int(count)
        total += int(count)
    out: dict = {"samples": total, "by_thread": dict(by_role.most_common()),
                 "by_line": dict(by_line.most_common(top))}
    if seconds:
        out["held_pct"] = round(100 * total / (RATE * seconds))  # of the samples py-spy meant to take
    return out


def report(found: dict) -> str:
    """The summary as a few lines of text."""
    if "error" in found:
        return f"  gil profile failed: {found['error']}"
    total = max(1, found["samples"])
    lines = [f"  lock held in {found.get('held_pct', '?')}% of samples; by thread: "
             + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in found["by_thread"].items())]
    lines += [f"    {100 * v / total:5.1f}%  {k}" for k, v in found["by_line"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(summary(Path(sys.argv[1]).read_text())))
