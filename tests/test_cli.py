"""The command line as a user meets it: outputs, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamseg import rle

from .conftest import ROOT, read_video, run_cli, write_clip


def _one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_flags_are_read_before_torch_is_imported() -> None:
    """--help and bad flags answer at once, and a Ctrl-C while torch loads ends in "aborted" (the heavy
    imports happen inside the CLI's handlers, not when the package is imported)."""
    code = "import sys, streamseg, streamseg.cli; print(sorted({'torch', 'av', 'transformers'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_segment_writes_video_and_masks(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=10)
    out, masks = tmp_path / "out.mp4", tmp_path / "m.jsonl"
    proc = run_cli("segment", str(src), "-o", str(out), "--save-masks", str(masks), "--model", str(tiny_model),
                   "--task", "panoptic", "--threshold", "0.0", "--mask-threshold", "0.05",
                   "--overlap-threshold", "0.2", "--preset", "ultrafast")
    assert proc.returncode == 0, proc.stderr
    assert len(read_video(out)[2]) == 10
    assert b"cabac=0" in out.read_bytes()  # x264 writes its settings into the stream: ultrafast has no CABAC
    records = [json.loads(line) for line in masks.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(10))
    assert all(r["task"] == "panoptic" and (r["width"], r["height"]) == (96, 64) for r in records)
    assert sum(len(r["segments"]) for r in records) > 0


def test_jsonl_round_trip(tmp_path: Path, tiny_model: Path) -> None:
    """What the export says decodes back to exactly the masks the API returned."""
    import streamseg

    src = write_clip(tmp_path / "in.mp4", frames=4)
    masks = tmp_path / "m.jsonl"
    results = list(streamseg.segment(src, model=str(tiny_model), task="instance", threshold=0.0,
                                     save_masks=masks))
    records = [json.loads(line) for line in masks.read_text().splitlines()]
    assert len(records) == len(results) == 4
    for rec, res in zip(records, results):
        seg = res.segmentation
        assert [s["id"] for s in rec["segments"]] == seg.ids
        assert [s["label"] for s in rec["segments"]] == seg.labels
        for s, mask in zip(rec["segments"], seg.masks.numpy()):
            decoded = rle.decode(s["rle"])
            assert np.array_equal(decoded, mask)
            assert s["area"] == int(mask.sum())
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_semantic_export_has_null_scores(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=2)
    masks = tmp_path / "m.jsonl"
    proc = run_cli("segment", str(src), "--save-masks", str(masks), "--model", str(tiny_model), "--task", "semantic")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(masks.read_text().splitlines()[0])
    assert rec["segments"] and all(s["score"] is None for s in rec["segments"])
    assert sum(s["area"] for s in rec["segments"]) == 96 * 64  # semantic covers every pixel once


def test_help_documents_every_flag() -> None:
    proc = run_cli("segment", "--help")
    assert proc.returncode == 0
    for flag in ("--model", "--task", "--save-masks", "--config", "--threshold", "--mask-threshold",
                 "--overlap-threshold", "--batch-size", "--device", "--dtype", "--no-audio", "--debug"):
        assert flag in proc.stdout


@pytest.mark.parametrize("case", ["missing", "not_video", "truncated_mp4", "directory"])
def test_bad_source(tmp_path: Path, tiny_model: Path, case: str) -> None:
    if case == "missing":
        src, needle = tmp_path / "nope.mp4", "no such file"
    elif case == "not_video":
        src, needle = tmp_path / "text.mp4", "not a video"
        src.write_text("just text\n" * 100)
    elif case == "truncated_mp4":
        full = write_clip(tmp_path / "full.mp4", frames=30)
        src, needle = tmp_path / "cut.mp4", "damaged"
        src.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    else:
        src, needle = tmp_path, "directory"
    proc = run_cli("segment", str(src), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model))
    _one_line_error(proc, 3, str(src), needle)


def test_truncated_mkv_still_segments_with_warning(tmp_path: Path, tiny_model: Path) -> None:
    full = write_clip(tmp_path / "full.mkv", frames=40)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "o.mp4"
    proc = run_cli("segment", str(cut), "-o", str(out), "--model", str(tiny_model))
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr
    assert 5 < len(read_video(out)[2]) < 40


def test_unreadable_model_folder(tmp_path: Path, clip: Path) -> None:
    empty = tmp_path / "model"
    empty.mkdir()
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", str(empty))
    _one_line_error(proc, 4, str(empty), "preprocessor_config.json")


def test_model_folder_with_broken_weights(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_bytes((tiny_model / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", str(broken))
    _one_line_error(proc, 4, "cannot load model")


def _model_copy(tmp_path: Path, tiny_model: Path, **config_changes) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tiny_model.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **config_changes}))
    return copy


def test_a_model_folder_without_its_config_says_so(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    folder = _model_copy(tmp_path, tiny_model)
    (folder / "config.json").unlink()
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", str(folder))
    _one_line_error(proc, 4, f"{folder}: no config.json in the model folder")


def test_classes_changed_in_the_config_say_what_does_not_fit(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    """An edited id2label: transformers' message points at a report the command line hides; this one says."""
    labels = {str(i): f"thing{i}" for i in range(8)}
    folder = _model_copy(tmp_path, tiny_model, id2label=labels, label2id={v: int(k) for k, v in labels.items()})
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", str(folder))
    _one_line_error(proc, 4, "the weights do not fit config.json: class_predictor.",
                    "(its id2label names 8 classes, the weights 5)")
    assert "report" not in proc.stderr


def test_a_model_whose_outputs_are_not_finite_is_said_to(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _model_copy(tmp_path, tiny_model)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              folder / "model.safetensors")
    proc = run_cli("segment", str(clip), "--save-masks", str(tmp_path / "m.jsonl"), "--model", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "the model's outputs are not finite (NaN or infinity)" in proc.stderr
    assert proc.stderr.count("not finite") == 1  # once a run, not once a frame


def test_a_checkpoint_of_another_architecture_says_what_it_is(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import MaskFormerConfig

    from streamseg import ModelError
    from streamseg.inference.loading import load_model

    other = tmp_path / "maskformer"
    MaskFormerConfig().save_pretrained(other)
    (other / "preprocessor_config.json").write_bytes((tiny_model / "preprocessor_config.json").read_bytes())
    (other / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=r"maskformer: a maskformer checkpoint; streamseg runs Mask2Former"):
        load_model(str(other))


def test_hub_unreachable_says_how_to_pass_a_folder(tmp_path: Path, clip: Path) -> None:
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"),
                   "--model", "facebook/mask2former-swin-tiny-coco-panoptic", env={"HF_HUB_OFFLINE": "1"})
    _one_line_error(proc, 4, "facebook/mask2former-swin-tiny-coco-panoptic", "--model PATH")


def test_offline_machine_uses_the_cache_without_waiting_on_the_hub(tmp_path: Path, clip: Path,
                                                                   tiny_model: Path) -> None:
    """Where the hub's name does not resolve, the hub client would retry every request for ~20 s: a
    cached checkpoint loads at once, and one that is not cached fails at once, with no retry."""
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for item in tiny_model.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://hub.invalid", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "acme/tiny", "--no-progress",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Retrying" not in proc.stderr and len(read_video(tmp_path / "o.mp4")[2]) == 12
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "p.mp4"), "--model", "acme/other", env=env)
    _one_line_error(proc, 4, "acme/other", "unreachable", "--model PATH")
    assert "Retrying" not in proc.stderr


@pytest.mark.parametrize("codec", ["x264", "aac", "h264_nvenc"])
def test_an_encoder_that_cannot_work_is_refused_before_any_work(tmp_path: Path, clip: Path, tiny_model: Path,
                                                               codec: str) -> None:
    """An unknown name, an audio encoder, or NVENC on a machine without one: one line, before the model loads."""
    from streamseg.sinks.video import encoder_opens

    if encoder_opens(codec):
        pytest.skip(f"{codec} opens on this machine")
    out = tmp_path / "o.mp4"
    proc = run_cli("segment", str(clip), "-o", str(out), "--model", str(tiny_model), "--codec", codec)
    _one_line_error(proc, 2, "output.codec", repr(codec))
    assert not out.exists()


@pytest.mark.parametrize(("codec", "suffix", "instead"), [("vp9", ".mov", ".mp4 or .mkv or .webm"),
                                                        ("libsvtav1", ".mov", ".mp4 or .mkv or .webm"),
                                                        ("h264", ".webm", ".mp4 or .mkv or .mov")])
def test_a_codec_the_container_cannot_hold_is_refused_before_any_work(tmp_path: Path, clip: Path, tiny_model: Path,
                                                                     codec: str, suffix: str, instead: str) -> None:
    """MOV takes no VP9 or AV1, WebM no H.264; FFmpeg says so only when the file is finished, after all the work."""
    from streamseg.sinks.video import encoder_opens, pick_encoder

    if not encoder_opens(pick_encoder(codec, accelerated=False)):
        pytest.skip(f"{codec} is not in this FFmpeg")
    out = tmp_path / f"o{suffix}"
    proc = run_cli("segment", str(clip), "-o", str(out), "--model", str(tiny_model), "--codec", codec)
    _one_line_error(proc, 2, f"video cannot be stored in a {suffix} file; use {instead}")
    assert not out.exists()


@pytest.mark.parametrize("codec", ["libvpx-vp9", "libsvtav1", "hevc"])
def test_other_encoders_write_every_frame_quietly(tmp_path: Path, clip: Path, tiny_model: Path, codec: str) -> None:
    """The encoders --codec names besides x264 write a whole file, and the run's output stays our lines
    (SVT-AV1 prints a banner of its own per encoder unless told not to)."""
    from streamseg.sinks.video import encoder_opens, pick_encoder

    if not encoder_opens(pick_encoder(codec, accelerated=False)):
        pytest.skip(f"{codec} is not in this FFmpeg")
    out = tmp_path / "o.mkv"
    proc = run_cli("segment", str(clip), "-o", str(out), "--model", str(tiny_model), "--codec", codec, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [ln for ln in proc.stderr.splitlines()
                                                                    if ln.startswith("done: ")], proc.stderr
    with av.open(str(out)) as container:
        expected = {"libvpx-vp9": "vp9", "libsvtav1": "av1", "hevc": "hevc"}[codec]
        assert container.streams.video[0].codec_context.codec.canonical_name == expected
    assert len(read_video(out)[0]) == len(read_video(clip)[0])


@pytest.mark.parametrize("where", ["no_folder", "is_dir", "bad_suffix"])
def test_unwritable_output(tmp_path: Path, clip: Path, tiny_model: Path, where: str) -> None:
    out = {"no_folder": tmp_path / "missing" / "o.mp4", "is_dir": tmp_path, "bad_suffix": tmp_path / "o.avi"}[where]
    if where == "is_dir":
        out = tmp_path / "sub.mp4"
        out.mkdir()
    proc = run_cli("segment", str(clip), "-o", str(out), "--model", str(tiny_model))
    _one_line_error(proc, 2 if where == "bad_suffix" else 5, str(out))


def test_read_only_folder(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a path under /proc is unwritable for everyone.
        out = Path("/proc/streamseg-test/o.mp4")
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        out = folder / "o.mp4"
    proc = run_cli("segment", str(clip), "-o", str(out), "--model", str(tiny_model))
    _one_line_error(proc, 5, str(out))


def test_unknown_task(tmp_path: Path, clip: Path) -> None:
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--task", "depth")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "Traceback" not in proc.stderr
    # The error and a hint, not argparse's whole usage above it.
    error, hint = proc.stderr.splitlines()
    assert error.startswith("error: argument --task: invalid choice: 'depth' (choose from ")
    assert hint == "usage: streamseg segment ... (see 'streamseg segment --help')"


def test_config_file_errors_name_the_key(tmp_path: Path, clip: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("postprocess:\n  treshold: 0.3\n")
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", str(cfg))
    _one_line_error(proc, 2, "postprocess.treshold", "unknown key")
    cfg.write_text("batching:\n  batch_size: many\n")
    proc = run_cli("segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", str(cfg))
    _one_line_error(proc, 2, "batching.batch_size", "integer")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_cli("segment", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate``, killing the process if it does not end in time (so none is left running)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running after {timeout} s:\n{err[-3000:]}")


LONG = 1200  # frames: 40 s of video, which a run stopped by a signal never reaches the end of


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip long enough that a signal lands mid-run however fast the machine (400 frames were once all
    done between a test seeing the 8th and the run handling the signal), written once: it takes seconds."""
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", width=160, height=96, frames=LONG, audio=True)


def _start_long_run(tmp_path: Path, model: Path, src: Path, *wrapper: str) -> tuple[subprocess.Popen, Path, Path]:
    out, masks = tmp_path / "o.mp4", tmp_path / "m.jsonl"
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "streamseg", "segment", str(src), "-o", str(out), "--save-masks", str(masks),
         "--model", str(model), "--batch-size", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if masks.exists() and len(masks.read_text().splitlines()) >= 8:
            break
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    return proc, out, masks


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_leaves_a_playable_file(tmp_path: Path, tiny_model: Path, long_clip: Path,
                                      signum: signal.Signals) -> None:
    """Ctrl-C, and SIGTERM (systemd, docker stop) and SIGHUP (a closed terminal) alike, finish the outputs."""
    proc, out, masks = _start_long_run(tmp_path, tiny_model, long_clip)
    proc.send_signal(signum)
    _, stderr = _communicate(proc, 60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "stopped early" in stderr
    pts, _, frames = read_video(out)
    written = len(masks.read_text().splitlines())
    assert 8 <= len(frames) < LONG
    assert len(frames) == written  # every frame done so far is in both outputs
    import av

    with av.open(str(out)) as c:  # the sound stops with the picture
        assert c.streams.audio and c.duration / 1e6 == pytest.approx(len(frames) / 30, abs=0.15)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nohup") is None, reason="needs nohup")
def test_a_hangup_under_nohup_does_not_stop_the_run(tmp_path: Path, tiny_model: Path, long_clip: Path) -> None:
    """nohup starts a command with SIGHUP ignored, so that it outlives the terminal: it stays ignored."""
    proc, out, masks = _start_long_run(tmp_path, tiny_model, long_clip, "nohup")
    proc.send_signal(signal.SIGHUP)
    before = len(masks.read_text().splitlines())
    time.sleep(3)
    assert proc.poll() is None, _communicate(proc, 10)[1]
    assert len(masks.read_text().splitlines()) > before  # still working
    proc.send_signal(signal.SIGINT)
    _, stderr = _communicate(proc, 60)
    assert proc.returncode == 130, stderr
    assert len(read_video(out)[2]) == len(masks.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux's setsid")
def test_a_dropped_terminal_still_finishes_the_outputs(tmp_path: Path, tiny_model: Path, long_clip: Path) -> None:
    """A dropped ssh session: the run's terminal goes away, which sends SIGHUP, and every later write to it
    fails. The outputs are finished all the same, and the run exits 129, not with a traceback."""
    import pty
    import select

    src = long_clip
    out, masks = tmp_path / "o.mp4", tmp_path / "m.jsonl"
    master, slave = pty.openpty()
    # As a login shell's command: in a session of its own, whose controlling terminal is the pty.
    proc = subprocess.Popen(
        ["setsid", "--ctty", sys.executable, "-m", "streamseg", "segment", str(src), "-o", str(out),
         "--save-masks", str(masks), "--model", str(tiny_model), "--batch-size", "1"],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                os.read(master, 65536)  # what a terminal shows (the progress line), read so it never fills
            if masks.exists() and len(masks.read_text().splitlines()) >= 8:
                break
        assert proc.poll() is None
    finally:
        os.close(master)  # the terminal hangs up
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP
    frames = len(read_video(out)[2])
    assert 8 <= frames < LONG and frames == len(masks.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_second_ctrl_c_aborts_and_still_closes_the_file(tmp_path: Path, tiny_model: Path, long_clip: Path,
                                                        signum: signal.Signals) -> None:
    """A second signal aborts, with the shell's code for it (143 for SIGTERM, as README says; it was 130)."""
    proc, out, _ = _start_long_run(tmp_path, tiny_model, long_clip)
    proc.send_signal(signum)
    time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = _communicate(proc, 60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert len(read_video(out)[2]) >= 8


def test_output_over_the_input_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=4)
    before = src.read_bytes()
    proc = run_cli("segment", str(src), "-o", str(tmp_path / "." / "in.mp4"), "--model", str(tiny_model))
    _one_line_error(proc, 2, "is also an input")
    assert src.read_bytes() == before


def test_an_output_that_is_a_hard_link_of_the_input_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    """Another name for the same file (its device and inode): writing it would replace the input."""
    src = write_clip(tmp_path / "in.mp4", frames=4)
    before = src.read_bytes()
    os.link(src, tmp_path / "link.mp4")
    proc = run_cli("segment", str(src), "-o", str(tmp_path / "link.mp4"), "--model", str(tiny_model))
    _one_line_error(proc, 2, "is also an input")
    assert src.read_bytes() == before


@pytest.mark.parametrize("masks", ["same", "dot"])
def test_two_outputs_in_one_file_are_refused(tmp_path: Path, tiny_model: Path, masks: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o x.mp4 --save-masks x.mp4`` (or ``./x.mp4``): two writers in one file would lose half of each."""
    src = write_clip(tmp_path / "in.mp4", frames=4)
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "streamseg", "segment", str(src), "-o", "x.mp4", "--save-masks",
                           "x.mp4" if masks == "same" else "./x.mp4", "--model", str(tiny_model)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _one_line_error(proc, 2, "are the same file")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("outputs", ["video", "masks", "both"])
def test_a_full_disk_is_one_line_not_a_hang_or_a_crash(tmp_path: Path, tiny_model: Path, outputs: str) -> None:
    """Outputs on a full disk (/dev/full fails every write with ENOSPC): exit 5 with the reason, at once."""
    src = write_clip(tmp_path / "in.mp4", width=160, height=96, frames=90, audio=True)
    args = ["segment", str(src), "--model", str(tiny_model)]
    if outputs in ("video", "both"):
        (tmp_path / "out.mp4").symlink_to("/dev/full")
        args += ["-o", str(tmp_path / "out.mp4")]
    if outputs in ("masks", "both"):
        (tmp_path / "masks.jsonl").symlink_to("/dev/full")
        args += ["--save-masks", str(tmp_path / "masks.jsonl")]
    proc = run_cli(*args, timeout=120)
    _one_line_error(proc, 5, "No space left on device")


def test_frames_far_larger_than_the_model_takes_are_warned_of(tmp_path: Path, tiny_model: Path) -> None:
    """The model sees a 96x96 image; drawing and exports run at the source's 1600x1600."""
    big = write_clip(tmp_path / "big.mp4", width=1600, height=1600, frames=2)
    proc = run_cli("segment", str(big), "--save-masks", str(tmp_path / "m.jsonl"), "--model", str(tiny_model))
    assert proc.returncode == 0, proc.stderr
    assert "1600x1600 frames are 278 times the model's input (96x96)" in proc.stderr, proc.stderr
    small = write_clip(tmp_path / "small.mp4", width=320, height=320, frames=2)
    proc = run_cli("segment", str(small), "--save-masks", str(tmp_path / "m2.jsonl"), "--model", str(tiny_model))
    assert "times the model's input" not in proc.stderr


def test_a_decoder_that_cannot_work_is_refused_as_a_device_is(tmp_path: Path, clip: Path, tiny_model: Path) -> None:
    """--decoder cuda on a machine without CUDA fails as --device cuda does, where it used to decode on the
    CPU without a word."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli("segment", str(clip), "--save-masks", str(tmp_path / "m.jsonl"), "--model", str(tiny_model),
                   "--decoder", "cuda")
    _one_line_error(proc, 2, "decoder: 'cuda' requested but NVDEC cannot decode here (CUDA is not available")
    assert not (tmp_path / "m.jsonl").exists()


def test_no_empty_masks_file_is_left_when_no_frame_came(tmp_path: Path, tiny_model: Path) -> None:
    from .conftest import free_port

    masks = tmp_path / "m.jsonl"
    proc = run_cli("segment", f"rtsp://127.0.0.1:{free_port()}/cam", "--save-masks", str(masks), "--model",
                   str(tiny_model), "--duration", "2", timeout=60)
    assert proc.returncode == 3 and "no frame in 2 s" in proc.stderr, proc.stderr
    assert not masks.exists()


@pytest.mark.parametrize("which", ["--config", "--sources-file"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path, which: str) -> None:
    """It used to be a UnicodeDecodeError traceback."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("model:\n  name: caf\xe9\n".encode("latin-1"))
    proc = run_cli("segment", "x.mp4", "-o", str(tmp_path / "o.mp4"), which, str(bad))
    _one_line_error(proc, 2, str(bad), "is not UTF-8 text (byte 19)")
