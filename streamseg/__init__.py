"""streamseg: Mask2Former segmentation over video files, webcams and camera streams."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .exceptions import Aborted, ConfigError, ModelError, SinkError, SourceError, StreamsegError

if TYPE_CHECKING:
    from .api import segment
    from .runtime.pipeline import Pipeline, RunSummary
    from .types import Frame, FrameResult, Segmentation

__version__ = "0.1.0"

__all__ = [
    "segment",
    "Pipeline",
    "RunSummary",
    "Config",
    "load_config",
    "Frame",
    "FrameResult",
    "Segmentation",
    "StreamsegError",
    "ConfigError",
    "SourceError",
    "ModelError",
    "SinkError",
    "Aborted",
]

# Imported on first use: they bring in torch, which takes seconds, and the command line parses its
# flags (and answers --help) before it needs them.
_LAZY = {"segment": ".api", "Pipeline": ".runtime.pipeline", "RunSummary": ".runtime.pipeline", "Frame": ".types",
         "FrameResult": ".types", "Segmentation": ".types"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
