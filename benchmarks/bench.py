"""streamseg's benchmarks, run by hand (never in CI), one scenario per subcommand:

    python benchmarks/bench.py file --model tiny --size 640x360 --task panoptic --batch-size 4 --frames 120
    python benchmarks/bench.py file --model swin-tiny --plant 8 --size 1280x720 --batch-size 8 --device cuda
    python benchmarks/bench.py live --seconds 10 --rounds 2          (see live.py)
    python benchmarks/bench.py components --size 1280x720            (see components.py)
    python benchmarks/bench.py cluster --files 8 --rounds 2          (see cluster.py: Ray workers)

``file`` is side-by-side throughput over a file: the model-only ceiling, streamseg end to end, and the
naive per-frame loop. Each measurement runs in its own process, one after the other on the same
machine, so peak memory is its own and the ratios compare like with like. With ``--baseline DIR`` (a
checkout of an earlier commit, e.g. ``git worktree add /tmp/base COMMIT``), streamseg as it was there
runs in every round too, beside this tree's, and the ratio between the two says what the commits since
then changed, measured side by side.

(1) ceiling: forward passes on already-preprocessed tensors on the device, nothing else.
(2) streamseg: file in -> annotated H.264 file + JSONL masks out, through the real pipeline; timed from the
    end of its first batch to the end of the run, the encoder's flush and the outputs' closing included.
(3) naive: OpenCV read -> transformers' image processor -> model -> transformers' post-processing ->
    numpy drawing -> cv2.VideoWriter, one frame at a time, as people write it today.
Model loading and the first batch are excluded from all three. The hub architectures are built with
random weights, which find no segments: ``--plant K`` gives their class head about K confident queries a
frame, so that post-processing, drawing and the export do the work real segments cost (the JSON says
how many segments a frame were found, and the batch sizes the batcher formed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cluster
import components
import gil_holders
import live
from harness import ROOT, check_tree, provenance, source_trees, tree_env

BUILT = ("tiny", "swin-tiny", "swin-small")  # the models bench.py builds (with --cache, once)
STAGES = ("decode", "upload", "preprocess", "forward", "postprocess", "render", "download", "encode", "export")


# --------------------------------------------------------------------------------------------- models

def build_model(kind: str, folder: Path) -> Path:
    """Save a checkpoint in the hub layout: a tiny CPU config, the sample model, or a hub architecture."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    if kind == "sample":
        return ROOT / "samples" / "model"
    if Path(kind).is_dir():
        return Path(kind)
    torch.manual_seed(0)
    if kind == "tiny":
        backbone = SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        config = Mask2FormerConfig(backbone_config=backbone, hidden_dim=64, mask_feature_size=64, feature_size=64,
                                   encoder_layers=2, decoder_layers=3, num_queries=32, num_labels=20,
                                   dim_feedforward=256, encoder_feedforward_dim=256)
        size = {"shortest_edge": 256, "longest_edge": 448}
    elif kind in ("swin-tiny", "swin-small"):
        # The architecture of facebook/mask2former-swin-{tiny,small}-coco-panoptic.
        depths = [2, 2, 6, 2] if kind == "swin-tiny" else [2, 2, 18, 2]
        backbone = SwinConfig(embed_dim=96, depths=depths, num_heads=[3, 6, 12, 24], window_size=7,
                              drop_path_rate=0.3, out_features=["stage1", "stage2", "stage3", "stage4"])
        config = Mask2FormerConfig(backbone_config=backbone, num_labels=133, num_queries=100)
        size = {"height": 384, "width": 384}
    else:
        raise SystemExit(f"unknown model {kind!r}: tiny, sample, swin-tiny, swin-small or a folder")
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": size, "size_divisor": 32}))
    return folder


def resize_input(model: Path, size: str, folder: Path) -> Path:
    """A copy of a checkpoint whose preprocessing resizes frames to HEIGHTxWIDTH."""
    height, width = (int(v) for v in size.lower().split("x"))
    shutil.copytree(model, folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["size"] = {"height": height, "width": width}
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    return folder


def plant_head(model_dir: Path, clip: Path, queries: int, folder: Path) -> Path:
    """A copy of a random-weight checkpoint whose class head is confident, for one thing class, in about
    ``queries`` queries a frame of ``clip``: those whose last decoder state lies furthest along a random
    direction. Their masks are the model's own. What post-processing keeps of them (overlaps are
    dropped) is what the run finds, and the run reports it."""
    import torch

    from streamseg.inference.loading import load_model
    from streamseg.inference.preprocess import preprocess
    from streamseg.sources import read_frames

    loaded = load_model(str(model_dir), device="cpu", dtype="float32")
    model, seen = loaded.model, {}
    # The head reads each decoder layer's state in turn; the last call is the final layer's.
    hook = model.class_predictor.register_forward_hook(lambda module, args, out: seen.update(state=args[0]))
    images = [torch.from_numpy(f.image) for _, f in zip(range(4), read_frames(str(clip)))]
    with torch.inference_mode():
        model(pixel_values=preprocess(images, loaded.spec, torch.float32))
    hook.remove()
    state = seen["state"]  # (frames, queries, hidden)
    direction = torch.randn(state.shape[-1], generator=torch.Generator().manual_seed(0))
    direction /= direction.norm()
    along = state @ direction
    ranked = along.sort(dim=1, descending=True).values
    cut = ranked[:, queries - 1:queries + 1].mean()  # between the K-th and the next, over the frames
    gain = 12.0 / along.std()
    thing = 0  # COCO panoptic's first class, a person: a thing, so each query is a segment of its own
    with torch.no_grad():
        model.class_predictor.weight.zero_()
        model.class_predictor.bias.zero_()
        model.class_predictor.weight[thing] = gain * direction
        model.class_predictor.bias[thing] = -gain * cut
    model.save_pretrained(folder)
    shutil.copy(model_dir / "preprocessor_config.json", folder / "preprocessor_config.json")
    return folder


def make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """A synthetic scene at the requested size (60 rendered frames, looped)."""
    from streamseg.testing.synthetic import Scene, write_clip

    return write_clip(path, Scene(11, aspect=width / height), width=width, height=height, pts=range(frames),
                      frame_step=2, distinct=60, options={"preset": "veryfast", "crf": "20"})


# ------------------------------------------------------------------------------------ measurements

def _peaks(device: str) -> dict:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class Busy:
    """How busy each thread of this process, and the GPU, were over a timed window: a thread near 100%
    is the one that holds the others back; an infer thread well under it, with the GPU idle, waits
    on something (the GIL, a host sync, a stage upstream).

    Threads are sampled from /proc every 0.25 s (they may end before the window does); Python
    threads go by their names, FFmpeg's and torch's by their kernel names, summed per name. The GPU's
    utilization is nvidia-smi's "a kernel ran" share, sampled every 100 ms. Linux only; elsewhere empty.

    The interpreter lock: a probe thread sleeps 5 ms at a time and measures how much longer than that
    each wake-up takes, which is, but for the timer's slack (~0.1 ms), the wait for the lock that any
    thread coming back from native code (a decoder, an encoder, a CUDA call) pays. Python hands the
    lock over every 5 ms (``sys.getswitchinterval``) when threads compete for it: waits near that
    mean the lock, not a core or the device, holds the pipeline back.
    """

    def __init__(self, device: str) -> None:
        import threading

        self._stop = threading.Event()
        self._first: dict[int, tuple[float, int]] = {}  # tid -> (time, cpu ticks) when first seen in the window
        self._last: dict[int, tuple[float, int]] = {}
        self._names: dict[int, str] = {}
        self._thread = threading.Thread(target=self._sample, name="bench-busy", daemon=True)
        self._probe = threading.Thread(target=self._probe_lock, name="bench-gil", daemon=True)
        self._waits: list[float] = []
        self._smi = None
        if device.startswith("cuda"):
            try:
                self._smi = subprocess.Popen(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self._smi = None

    def start(self) -> None:
        self._thread.start()
        self._probe.start()

    def _probe_lock(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(0.005)
            self._waits.append(time.perf_counter() - start - 0.005)

    def _sample(self) -> None:
        import threading

        while not self._stop.is_set():
            now = time.perf_counter()
            names = {t.native_id: t.name for t in threading.enumerate()}
            for task in Path("/proc/self/task").glob("*") if Path("/proc/self/task").is_dir() else []:
                try:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    comm = (task / "comm").read_text().strip()
                except OSError:  # the thread ended
                    continue
                tid, ticks = int(task.name), int(fields[11]) + int(fields[12])  # utime + stime
                self._names[tid] = names.get(tid, comm)
                self._first.setdefault(tid, (now, ticks))
                self._last[tid] = (now, ticks)
            self._stop.wait(0.25)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._probe.join()
        tick = os.sysconf("SC_CLK_TCK")
        busy: dict[str, float] = {}
        for tid, (t0, c0) in self._first.items():
            t1, c1 = self._last[tid]
            if t1 > t0 and tid not in (self._thread.native_id, self._probe.native_id):
                name = self._names[tid]
                busy[name] = busy.get(name, 0.0) + 100 * (c1 - c0) / tick / (t1 - t0)
        out: dict = {"threads_busy_pct": {k: round(v) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])
                                          if v >= 1}}
        if self._waits:
            waits = sorted(self._waits)
            out["gil_wait_ms"] = {"mean": round(1000 * statistics.mean(waits), 2),
                                  "p90": round(1000 * waits[int(0.9 * (len(waits) - 1))], 2)}
        if self._smi is not None:
            self._smi.terminate()
            values = [float(v) for v in self._smi.communicate()[0].split() if v.replace(".", "").isdigit()]
            if values:
                out["gpu_util_pct"] = round(statistics.mean(values))
        return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_ceiling(args: argparse.Namespace) -> dict:
    import torch

    from streamseg.runtime.allocator import keep_freed_memory
    from streamseg.inference.graphs import capture_supported, graphed_forward
    from streamseg.inference.loading import load_model
    from streamseg.inference.preprocess import preprocess
    from streamseg.sources import read_frames

    keep_freed_memory()  # as a pipeline does while it runs: the model alone at its best, page faults spared
    loaded = load_model(args.model_dir, device=args.device, dtype=args.dtype)
    device = str(loaded.device)
    images = [f.image for _, f in zip(range(args.batch_size), read_frames(args.clip))]
    with torch.inference_mode():
        pixel_values = preprocess([torch.from_numpy(i).to(loaded.device) for i in images], loaded.spec, loaded.dtype)
        if args.channels_last:
            loaded.model.to(memory_format=torch.channels_last)
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        forward = torch.compile(loaded.model) if args.compile else loaded.model
        if device.startswith("cuda") and args.cuda_graphs and not args.compile and capture_supported():
            graphed = graphed_forward(loaded.model, args.batch_size)

            def forward(pixel_values):  # the same call, replayed from a CUDA graph, as streamseg runs it
                return graphed(pixel_values)
        for _ in range(3):
            forward(pixel_values=pixel_values)
        _sync(device)
        steps = max(1, args.frames // args.batch_size)
        busy = Busy(device)
        busy.start()
        start = time.perf_counter()
        for _ in range(steps):
            forward(pixel_values=pixel_values)
        _sync(device)
        seconds = time.perf_counter() - start
    return {"fps": steps * args.batch_size / seconds, "frames": steps * args.batch_size, "seconds": seconds,
            **busy.stop(), **_peaks(device)}


def measure_streamseg(args: argparse.Namespace) -> dict:
    from streamseg import Pipeline, load_config

    if args.switch_interval:  # how often Python hands the interpreter lock over (its default: 5 ms)
        sys.setswitchinterval(args.switch_interval / 1000)
    out_dir = Path(args.workdir)
    cfg = load_config(
        None, sources=(args.clip,), model__name=args.model_dir, model__task=args.task, model__device=args.device,
        model__dtype=args.dtype, model__compile=args.compile, model__channels_last=args.channels_last,
        model__cuda_graphs=args.cuda_graphs, output__preset=args.preset,
        batching__batch_size=args.batch_size, color_conversion=args.color_conversion, decoder=args.decoder,
        postprocess__threshold=args.threshold,
        **({"gpu_frames": True} if args.gpu_frames else {}),  # a baseline may predate the option
        **({"tracking__enabled": False} if args.no_track else {}),
        output__video=str(out_dir / "streamseg.mp4"), output__masks=str(out_dir / "streamseg.jsonl"),
    )
    totals = dict.fromkeys(STAGES, 0.0)
    count, first_done, spy, segments = 0, 0.0, None, 0
    batches: dict[int, int] = {}  # frames by the size of the batch they were in
    samples = Path(args.workdir) / f"gil-{os.getpid()}.txt"
    with Pipeline(cfg, profile=args.profile) as pipeline:
        device = str(pipeline.runner.loaded.device)
        busy = Busy(device)
        for result in pipeline.results():
            count += 1
            if count == args.batch_size:  # the first batch pays for warm-up (allocator, kernels)
                first_done = time.perf_counter()
                busy.start()
                spy = gil_holders.start(samples) if args.gil_profile else None
            if count > args.batch_size:
                totals["decode"] += result.frame.decode_s
                for stage, seconds in result.stats.items():
                    totals[stage] = totals.get(stage, 0.0) + seconds
                size = getattr(result, "batch_size", 0)  # 0: a baseline from before it was recorded
                batches[size] = batches.get(size, 0) + 1
                segments += len(result.segmentation.labels)
    end = time.perf_counter()  # every output closed: the encoder's flush and the files' trailers counted
    timed = count - args.batch_size
    import streamseg

    gil = {"gil_holders": gil_holders.stop(spy, samples, end - first_done)} if spy else {}
    return {"fps": timed / (end - first_done), "frames": count, "seconds": end - first_done,
            "package": str(Path(streamseg.__file__).parent), "segments_per_frame": segments / max(timed, 1),
            "batches": {str(size) if size else "unrecorded": frames // max(size, 1) for size, frames in sorted(batches.items())},
            "stages_ms": {k: 1000 * v / timed for k, v in totals.items()}, **busy.stop(), **_peaks(device), **gil}


def measure_naive(args: argparse.Namespace) -> dict:
    import cv2
    import numpy as np
    import torch
    import transformers
    from transformers import Mask2FormerForUniversalSegmentation

    from streamseg.inference.loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = json.loads((Path(args.model_dir) / "preprocessor_config.json").read_text())
    # The PIL processor people use (transformers 5.x name first, 4.x's otherwise).
    processor_cls = getattr(transformers, "Mask2FormerImageProcessorPil", transformers.Mask2FormerImageProcessor)
    processor = processor_cls(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
    model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model_dir).to(device, dtype).eval()
    capture = cv2.VideoCapture(args.clip)
    fps_in = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(Path(args.workdir) / "naive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, size)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 255, size=(256, 3))
    count, start = 0, 0.0
    with torch.inference_mode():
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            inputs = processor(images=rgb, return_tensors="pt")
            outputs = model(pixel_values=inputs["pixel_values"].to(device, dtype))
            target = [(rgb.shape[0], rgb.shape[1])]
            if args.task == "semantic":
                seg = processor.post_process_semantic_segmentation(outputs, target_sizes=target)[0].cpu().numpy()
                segments = [(c, seg == c) for c in np.unique(seg)]
            elif args.task == "instance":
                res = processor.post_process_instance_segmentation(outputs, threshold=args.threshold,
                                                                   target_sizes=target, return_binary_maps=True)[0]
                maps = res["segmentation"]
                segments = [] if not res["segments_info"] else [
                    (s["label_id"], maps[k].cpu().numpy() > 0) for k, s in enumerate(res["segments_info"])]
            else:
                res = processor.post_process_panoptic_segmentation(outputs, threshold=args.threshold,
                                                                   target_sizes=target)[0]
                seg = res["segmentation"].cpu().numpy()
                segments = [(s["label_id"], seg == s["id"]) for s in res["segments_info"]]
            overlay = bgr.copy()
            for label, mask in segments:
                overlay[mask] = (0.5 * overlay[mask] + 0.5 * palette[label % 256]).astype(np.uint8)
            writer.write(overlay)
            count += 1
            if count == 1:
                start = time.perf_counter()
            if count > args.naive_frames:  # its fps is steady; transformers' post-processing is slow at 720p
                break
    writer.release()
    seconds = time.perf_counter() - start
    return {"fps": (count - 1) / seconds, "frames": count, "seconds": seconds, **_peaks(str(device))}


# ------------------------------------------------------------------------------------------ driver

def _once(path: Path, make) -> Path:
    """``path`` if an earlier run made it, else ``make(a temporary name)`` renamed to it when done, so a
    run stopped halfway leaves nothing to reuse."""
    if path.exists():
        return path
    part = path.with_name("part-" + path.name)
    if part.is_dir():
        shutil.rmtree(part)
    elif part.exists():
        part.unlink()
    make(part)
    part.rename(path)
    return path


def _child(mode: str, args: argparse.Namespace) -> dict:
    tree, variant = ROOT, []
    if mode == "baseline":  # streamseg's run, with the package imported from the baseline's tree
        mode, tree = "streamseg", Path(args.baseline).resolve()
    if mode == "variant":  # streamseg's run with other settings: the flags given last win
        mode, variant = "streamseg", shlex.split(args.variant)
    cmd = [sys.executable, __file__, "file", "--child", mode, "--model-dir", args.model_dir, "--clip", args.clip,
           "--workdir", args.workdir, "--task", args.task, "--batch-size", str(args.batch_size),
           "--frames", str(args.frames), "--device", args.device, "--dtype", args.dtype,
           "--threshold", str(args.threshold), "--naive-frames", str(args.naive_frames),
           "--color-conversion", args.color_conversion, "--decoder", args.decoder, "--preset", args.preset]
    cmd += ["--compile"] if args.compile else []
    cmd += ["--gpu-frames"] if args.gpu_frames else []
    cmd += ["--no-track"] if args.no_track else []
    cmd += ["--switch-interval", str(args.switch_interval)] if args.switch_interval else []
    cmd += ["--channels-last"] if args.channels_last else []
    cmd += [] if args.cuda_graphs else ["--no-cuda-graphs"]
    cmd += ["--profile"] if args.profile else []
    cmd += ["--gil-profile"] if args.gil_profile else []
    cmd += variant
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tree_env(tree))
    if proc.returncode != 0:
        # Its whole stderr is kept beside the results (a failed CUDA-graph capture says why there).
        (Path(args.workdir) / f"{mode}-stderr.txt").write_text(proc.stderr)
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    if "CUDA graphs unavailable" in proc.stderr or "Traceback" in proc.stderr:
        print(f"{mode} said on stderr:\n{proc.stderr[-1500:]}", file=sys.stderr, flush=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def file_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py file", description="side-by-side throughput over a file")
    parser.add_argument("--model", default="tiny", help="tiny, sample, swin-tiny, swin-small or a folder")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the test clip")
    parser.add_argument("--input-size", metavar="HEIGHTxWIDTH",
                        help="run the model at this input size instead of its own (e.g. the trained sample model "
                             "at the tiny config's 256x448)")
    parser.add_argument("--task", default="panoptic", choices=("semantic", "instance", "panoptic"))
    parser.add_argument("--plant", type=int, default=0, metavar="K",
                        help="give a random-weight model's class head about K confident queries a frame (real "
                             "segments, whose post-processing, drawing and export cost what real ones do)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="segment score threshold for streamseg and the naive loop alike (random weights "
                             "score low: lower it so that both draw and export real segments)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels-last layout, ceiling and streamseg alike")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="launch the model's kernels one by one (ceiling and streamseg alike)")
    parser.add_argument("--profile", action="store_true", help="exact per-stage times (syncs after each stage)")
    parser.add_argument("--gil-profile", action="store_true",
                        help="sample who holds the interpreter lock in streamseg's runs (py-spy on the PATH)")
    parser.add_argument("--color-conversion", default="auto", choices=("auto", "device", "host"),
                        help="where streamseg turns YUV into RGB and back (auto: on a GPU when there is one)")
    parser.add_argument("--decoder", default="auto", choices=("auto", "cpu"),
                        help="streamseg's decoder (auto: NVDEC when the model runs on CUDA and it opens)")
    parser.add_argument("--gpu-frames", action="store_true", help="NVDEC's frames stay on the GPU (streamseg)")
    parser.add_argument("--no-track", action="store_true", help="streamseg without its tracking stage")
    parser.add_argument("--switch-interval", type=float, metavar="MS",
                        help="streamseg's process hands the interpreter lock over this often (Python: 5 ms)")
    parser.add_argument("--preset", default="veryfast", help="streamseg's libx264 preset (where there is no NVENC)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true", help="streamseg alone (a variant of a run that has one)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run streamseg from this source tree (an earlier commit's checkout) each round")
    parser.add_argument("--variant", metavar="FLAGS",
                        help="also run streamseg with these flags in each round, e.g. --variant='--decoder cpu' "
                             "(with '=': argparse takes a separate value that starts with a dash for an option)")
    parser.add_argument("--rounds", type=int, default=3, help="alternate the runs this many times (median)")
    parser.add_argument("--naive-frames", type=int, default=60, help="frames timed in the naive loop")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--cache", help="keep the built model and clip in this folder and reuse them")
    parser.add_argument("--check-args", action="store_true",
                        help="check these arguments (and --variant's flags, and --baseline's tree), then exit: "
                             "what gpu_check.sh's ARGS_ONLY=1 asks of each step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    source_trees(parser, args.baseline)  # refuses a baseline with no package, before anything runs
    if args.variant:
        parser.parse_args([*argv, *shlex.split(args.variant)])  # its flags, as _child adds them
    if args.check_args:
        return
    if args.child:
        result = {"ceiling": measure_ceiling, "streamseg": measure_streamseg, "naive": measure_naive}[args.child](args)
        check_tree()  # every streamseg module it loaded came from the tree it was asked to measure
        print(json.dumps(result))
        return

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        # With --cache, models and clips made once serve later runs (the lent GPU's minutes are few).
        made = Path(args.cache) if args.cache else Path(tmp)
        made.mkdir(parents=True, exist_ok=True)
        if args.model in BUILT:
            args.model_dir = str(_once(made / f"model-{args.model}", lambda path: build_model(args.model, path)))
        else:
            args.model_dir = str(build_model(args.model, Path(tmp) / "model"))
        if args.input_size:
            args.model_dir = str(resize_input(Path(args.model_dir), args.input_size, Path(tmp) / "resized"))
        frames = args.frames + args.batch_size
        args.clip = str(_once(made / f"clip-{width}x{height}-{frames}.mp4",
                              lambda path: make_clip(path, width, height, frames)))
        if args.plant:
            planted = f"model-{Path(args.model_dir).name}-plant{args.plant}-{width}x{height}"
            args.model_dir = str(_once(made / planted, lambda path: plant_head(Path(args.model_dir), Path(args.clip),
                                                                             args.plant, path)))
        # Rounds alternate the runs, so that a machine whose speed drifts (a shared CPU does) weighs on
        # each ratio's two sides alike; each ratio is taken within a round, then the median is reported.
        runs = (([] if args.skip_ceiling else ["ceiling"]) + ["streamseg"] + (["variant"] if args.variant else [])
                + (["baseline"] if args.baseline else [])
                + ([] if args.skip_naive else ["naive"]))
        rounds = []
        for i in range(args.rounds):
            rounds.append({})
            for name in list(runs):
                try:
                    rounds[-1][name] = _child(name, args)
                except SystemExit as failure:
                    if name != "baseline":
                        raise
                    print(f"the baseline failed, so it is left out: {failure}", flush=True)  # the rest still counts
                    runs.remove(name)
                    for r in rounds:
                        r.pop(name, None)
                    continue
                # Said as it comes, so a run cut short (a time limit on a lent GPU) still tells something.
                print(f"round {i + 1} {name}: {rounds[-1][name]['fps']:.2f} fps", flush=True)
    import torch
    import transformers

    print(f"\nmodel={args.model} input={args.input_size or 'own'} size={args.size} task={args.task} "
          f"threshold={args.threshold} batch={args.batch_size} device={args.device} dtype={args.dtype} "
          f"compile={args.compile} channels_last={args.channels_last} colors={args.color_conversion} "
          f"decoder={args.decoder} gpu_frames={args.gpu_frames} cuda_graphs={args.cuda_graphs} preset={args.preset} "
          f"switch_interval={args.switch_interval or 'default'} "
          f"rounds={args.rounds} "
          f"torch={torch.__version__} transformers={transformers.__version__}")
    print(f"{'run':<10} {'fps':>8}  {'(each round)':<24} {'peak RSS MB':>12} {'peak dev MB':>12}")
    for name in runs:
        fps = [r[name]["fps"] for r in rounds]
        each = " ".join(f"{f:.2f}" for f in fps)
        rss = max(r[name]["peak_rss_mb"] for r in rounds)
        print(f"{name:<10} {statistics.median(fps):8.2f}  {each:<24} {rss:12.0f} "
              f"{max(r[name].get('peak_device_mb', 0) for r in rounds):12.0f}")
    pairs = [("streamseg", other) for other in runs if other != "streamseg"]
    pairs += [("variant", "ceiling")] if args.variant and "ceiling" in runs else []
    for top, bottom in pairs:
        ratios = [r[top]["fps"] / r[bottom]["fps"] for r in rounds]
        each = " ".join(f"{x:.2f}" for x in ratios) + (f"; variant: {args.variant}" if top == "variant" else "")
        print(f"{top:<9} / {bottom:<7} = {statistics.median(ratios):.2f}  (each round: {each})")
    for name in (r for r in runs if r not in ("naive", "ceiling")):
        run = sorted(rounds, key=lambda r: r[name]["fps"])[len(rounds) // 2][name]
        print(f"{name}: {run.get('segments_per_frame', float('nan')):.1f} segments a frame; batches formed "
              f"(size: count) {run.get('batches', {})}")
    print("streamseg per-frame stage times (ms, median round; stages overlap across threads):")
    middle = sorted(rounds, key=lambda r: r["streamseg"]["fps"])[len(rounds) // 2]["streamseg"]
    print("  " + "  ".join(f"{k}={v:.1f}" for k, v in middle["stages_ms"].items()))
    print("busy threads (% of one core, median round; a thread near 100 holds the others back):")
    for name in (r for r in runs if r != "naive"):
        run = sorted(rounds, key=lambda r: r[name]["fps"])[len(rounds) // 2][name]
        gpu = f"  GPU {run['gpu_util_pct']}%" if "gpu_util_pct" in run else ""
        threads = "  ".join(f"{k.removeprefix('streamseg-')}={v}" for k, v in run.get("threads_busy_pct", {}).items())
        print(f"  {name:<10}{gpu}  {threads}")
    print("interpreter lock: ms a thread waits for it on waking (mean, p90; ~0.1 is the timer alone, 5 the most):")
    for name in (r for r in runs if r != "naive"):
        wait = sorted(rounds, key=lambda r: r[name]["fps"])[len(rounds) // 2][name].get("gil_wait_ms")
        if wait:
            print(f"  {name:<10}{wait['mean']:.2f}  {wait['p90']:.2f}")
    for name in (r for r in runs if r != "naive" and "gil_holders" in rounds[0].get(r, {})):
        print(f"who holds the interpreter lock, {name} (py-spy, median round; % of the samples holding it):")
        print(gil_holders.report(sorted(rounds, key=lambda r: r[name]["fps"])[len(rounds) // 2][name]["gil_holders"]))
    if args.json:
        Path(args.json).write_text(json.dumps({**provenance(), "args": vars(args), "rounds": rounds}, indent=2))


SCENARIOS = {"file": file_main, "live": live.main, "components": components.main, "cluster": cluster.main}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SCENARIOS:
        raise SystemExit(f"usage: bench.py {{{','.join(SCENARIOS)}}} [options] (--help after one says its options)")
    SCENARIOS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
