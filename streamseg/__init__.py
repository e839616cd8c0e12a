"""streamseg: Mask2Former segmentation over video files, webcams and camera streams."""

from .api import segment
from .config import Config, load_config
from .exceptions import ConfigError, ModelError, SinkError, SourceError, StreamsegError
from .pipeline import Pipeline, RunSummary
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
]
