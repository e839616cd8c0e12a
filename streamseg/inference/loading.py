"""Loading a Mask2Former checkpoint from the Hugging Face hub or a local folder in the hub layout."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..exceptions import ModelError
from .preprocess import PreprocessSpec

__all__ = ["LoadedModel", "load_model", "resolve_device", "resolve_dtype", "guess_task"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to feed it and read its output."""

    model: torch.nn.Module
    spec: PreprocessSpec
    id2label: dict[int, str]
    name: str
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available on this machine")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ModelError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("device 'mps' requested but Apple's Metal (MPS) is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on the CPU and float16 on an accelerator."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return _DTYPES[dtype]


def guess_task(name: str, id2label: dict[int, str]) -> str:
    """The task a checkpoint was trained for, read from its name; panoptic when the name does not say."""
    lowered = os.path.basename(os.path.normpath(name)).lower() if os.path.isdir(name) else name.lower()
    for task in ("panoptic", "instance", "semantic"):
        if task in lowered:
            return task
    if any(k in lowered for k in ("ade", "cityscapes", "mapillary")) and len(id2label) in (19, 65, 150):
        return "semantic"
    return "panoptic"


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves. Where it does not (an offline machine), the hub client
    would retry each request for about 20 s before giving up: ask the local cache alone instead."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(urlsplit(constants.ENDPOINT).hostname, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _read_preprocessor_config(name: str, local_only: bool) -> dict:
    if os.path.isdir(name):
        path = Path(name) / "preprocessor_config.json"
        if not path.is_file():
            raise ModelError(f"{name}: no preprocessor_config.json in the model folder")
    else:
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name):
            raise ModelError(f"{name}: not a model folder (no such directory)")
        from transformers.utils import cached_file

        try:
            found = cached_file(name, "preprocessor_config.json", local_files_only=local_only)
        except OSError as exc:
            text = str(exc)
            if "connect" in text or "offline" in text.lower() or "cached" in text:
                raise ModelError(
                    f"cannot download model {name!r}: the Hugging Face hub is unreachable and it is not in the "
                    f"local cache{_no_folder_either(name)}; pass a local folder in the hub layout with --model PATH"
                ) from exc
            raise ModelError(f"model {name!r} not found on the Hugging Face hub: {text.splitlines()[0]}") from exc
        if found is None:
            raise ModelError(f"model {name!r} has no preprocessor_config.json")
        path = Path(found)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable preprocessor config ({exc})") from exc


def _check_architecture(name: str, local_only: bool) -> None:
    """A checkpoint of another architecture (DETR, MaskFormer, ...) says so, instead of failing inside
    transformers with a report about mismatched weights."""
    if os.path.isdir(name):
        path: str | Path | None = Path(name) / "config.json"
        if not Path(path).is_file():
            raise ModelError(f"{name}: no config.json in the model folder (the model's architecture and classes)")
    else:
        from transformers.utils import cached_file

        try:
            path = cached_file(name, "config.json", local_files_only=local_only)
        except OSError:  # from_pretrained tells what is missing
            return
    try:
        model_type = json.loads(Path(path).read_text()).get("model_type") if path else None
    except (OSError, ValueError, AttributeError):
        return
    if model_type and model_type != "mask2former":
        raise ModelError(f"{name}: a {model_type} checkpoint; streamseg runs Mask2Former checkpoints "
                         "(model_type mask2former)")


def _mismatch(name: str, local_only: bool) -> str | None:
    """Which weights do not fit the shapes config.json gives them (an edited id2label, another model's
    config), or None where that is not what went wrong: transformers' own message points at a report it
    logs, which the command line hides."""
    try:
        from safetensors import safe_open
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
        from transformers.utils import cached_file

        weights = (Path(name) / "model.safetensors" if os.path.isdir(name)
                   else cached_file(name, "model.safetensors", local_files_only=local_only))
        config = Mask2FormerConfig.from_pretrained(name, local_files_only=local_only)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Mask2FormerForUniversalSegmentation(config).state_dict().items()}
        with safe_open(str(weights), "pt") as stored:
            found = {k: tuple(stored.get_slice(k).get_shape()) for k in stored.keys()}  # noqa: SIM118
    except Exception:  # noqa: BLE001 - no weights file, no config: the first message stands
        return None
    wrong = [(key, found[key], expected[key]) for key in found if key in expected and found[key] != expected[key]]
    if not wrong:
        return None
    key, got, want = wrong[0]
    text = (f"the weights do not fit config.json: {key} is {'x'.join(map(str, got))} in the weights, "
            f"{'x'.join(map(str, want))} by config.json")
    if "class_predictor" in key:
        text += f" (its id2label names {config.num_labels} classes, the weights {got[0] - 1})"
    return text + (f", and {len(wrong) - 1} more" if len(wrong) > 1 else "")


def _no_folder_either(name: str) -> str:
    """For a hub id that may have been meant as a folder: where it was looked for."""
    first = name.split("/", 1)[0]
    return f" (nor is it a folder of {os.getcwd()})" if os.path.isdir(first) else ""


def load_model(name: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a Mask2Former checkpoint for inference.

    Args:
        name: a hub id such as ``facebook/mask2former-swin-tiny-coco-panoptic`` or a local folder with
            config.json, weights and preprocessor_config.json.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``; weights are cast whatever they were saved in.

    Raises:
        ModelError: the checkpoint cannot be found or loaded.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    local_only = not os.path.isdir(name) and not _hub_resolves()
    spec = PreprocessSpec.from_dict(_read_preprocessor_config(name, local_only))
    _check_architecture(name, local_only)

    from transformers import Mask2FormerForUniversalSegmentation

    try:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(name, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the checkpoint's (safetensors, config, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {name!r}: {_mismatch(name, local_only) or first}") from exc
    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    log.info("loaded %s on %s as %s", name, torch_device, torch_dtype)
    return LoadedModel(model=model, spec=spec, id2label=id2label, name=name, device=torch_device, dtype=torch_dtype)
