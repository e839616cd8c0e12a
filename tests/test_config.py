"""Config: YAML presets, overrides, validation messages, and the public API surface."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamseg
from streamseg.config import Config, load_config
from streamseg.exceptions import ConfigError
from streamseg.inference.loading import guess_task

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.name


def test_presets_exist_for_common_checkpoints() -> None:
    names = {load_config(p).model.name for p in CONFIGS}
    for hub_id in ("facebook/mask2former-swin-tiny-coco-panoptic", "facebook/mask2former-swin-tiny-coco-instance",
                   "facebook/mask2former-swin-tiny-ade-semantic", "facebook/mask2former-swin-tiny-cityscapes-semantic"):
        assert hub_id in names


def test_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("postprocess: {threshold: 0.7}\nbatching: {batch_size: 8}\n")
    cfg = load_config(path, postprocess__threshold=0.2, batching__batch_size=None)
    assert cfg.postprocess.threshold == 0.2
    assert cfg.batching.batch_size == 8  # None means "flag not given"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"modle": {}}, "modle: unknown key"),
        ({"model": {"task": "depth"}}, "model.task: unknown task 'depth'"),
        ({"postprocess": {"threshold": 1.5}}, "postprocess.threshold: must be between 0 and 1"),
        ({"postprocess": {"threshold": "high"}}, "postprocess.threshold: expected a number"),
        ({"batching": {"batch_size": 0}}, "batching.batch_size: must be at least 1"),
        ({"batching": {"batch_size": 2.5}}, "batching.batch_size: expected an integer"),
        ({"render": {"labels": "yes"}}, "render.labels: expected true or false"),
        ({"postprocess": {"label_ids_to_fuse": 3}}, "postprocess.label_ids_to_fuse: expected a list"),
        ({"output": {"video": "out.avi"}}, "output.video: unsupported container '.avi'"),
        ({"output": {"preset": "fastest"}}, "output.preset: unknown preset 'fastest' (expected one of ultrafast,"),
        ({"model": "x"}, "model: expected a mapping"),
        ({"model": {"device": "cuda:x"}}, "model.device: unknown device 'cuda:x'"),
        ({"model": {"device": "gpu"}}, "model.device: unknown device 'gpu'"),
    ],
)
def test_validation_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Config.from_dict(data)


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.batching = None  # type: ignore[misc]


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: a\n  task: [panoptic\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # One line that says where, as an editor counts, not PyYAML's six-line report.
    assert str(caught.value) == (f"config file {path} is not valid YAML: while parsing a flow sequence at line 3, "
                                 "column 9: expected ',' or ']', but got '<stream end>' at line 4, column 1")
    path.write_text("model:\n\tname: a\n")
    with pytest.raises(ConfigError, match=r"found character '\\t' that cannot start any token at line 2, column 1$"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "name, labels, task",
    [
        ("facebook/mask2former-swin-tiny-coco-panoptic", 133, "panoptic"),
        ("facebook/mask2former-swin-small-coco-instance", 80, "instance"),
        ("facebook/mask2former-swin-tiny-ade-semantic", 150, "semantic"),
        ("facebook/mask2former-swin-large-cityscapes-semantic", 19, "semantic"),
        ("someone/my-finetune", 7, "panoptic"),
    ],
)
def test_task_from_checkpoint_name(name: str, labels: int, task: str) -> None:
    assert guess_task(name, {i: str(i) for i in range(labels)}) == task


def test_public_api_is_exported() -> None:
    for name in streamseg.__all__:
        assert hasattr(streamseg, name), name
    assert {"segment", "Pipeline", "Config", "FrameResult", "Segmentation", "StreamsegError"} <= set(streamseg.__all__)


def test_a_device_this_machine_lacks_is_one_line() -> None:
    import torch

    from streamseg import ModelError
    from streamseg.inference.loading import resolve_device

    if not torch.backends.mps.is_available():
        with pytest.raises(ModelError, match=r"^device 'mps' requested but Apple's Metal \(MPS\) is not available"):
            resolve_device("mps")
    with pytest.raises(ModelError, match=r"^device 'cuda:\d+' requested but"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU, or no CUDA at all


def test_decoder_is_checked() -> None:
    assert load_config(None, decoder="cuda:1").decoder == "cuda:1"
    with pytest.raises(ConfigError, match=r"^decoder: unknown decoder 'vaapi'"):
        load_config(None, decoder="vaapi")


@pytest.mark.parametrize("other", [{"decoder": "cpu"}, {"color_conversion": "host"}])
def test_gpu_frames_need_nvdec_and_the_conversion_on_the_gpu(other: dict) -> None:
    assert load_config(None, gpu_frames=True, decoder="cuda").gpu_frames
    with pytest.raises(ConfigError, match=r"^gpu_frames: needs NVDEC's frames"):
        load_config(None, gpu_frames=True, **other)


def test_model_folder_is_found_beside_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that ships with its model (configs/sample.yaml) works from any directory; a folder of
    the working directory, and a hub id, are taken as they are."""
    (tmp_path / "kit" / "model").mkdir(parents=True)
    (tmp_path / "kit" / "configs").mkdir()
    config = tmp_path / "kit" / "configs" / "c.yaml"
    config.write_text("model:\n  name: ../model\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Path(load_config(config).model.name).resolve() == (tmp_path / "kit" / "model").resolve()
    (tmp_path / "model").mkdir()  # ../model from the working directory now exists: it wins
    assert load_config(config).model.name == "../model"
    config.write_text("model:\n  name: facebook/mask2former-swin-tiny-coco-panoptic\n")
    assert load_config(config).model.name == "facebook/mask2former-swin-tiny-coco-panoptic"


def test_segment_takes_named_and_dotted_arguments_alike(clip: Path, tiny_model: Path) -> None:
    """``threshold=`` and ``postprocess__threshold=`` are one setting: either works, and two values for it
    are refused rather than one silently dropped (it was a TypeError)."""
    first = next(streamseg.segment(clip, model=str(tiny_model), postprocess__threshold=0.9, batching__batch_size=2))
    assert first.index == 0
    next(streamseg.segment(clip, model__name=str(tiny_model), threshold=0.9, postprocess__threshold=0.9))
    with pytest.raises(ConfigError, match="postprocess.threshold: given twice"):
        next(streamseg.segment(clip, model=str(tiny_model), threshold=0.4, postprocess__threshold=0.6))
