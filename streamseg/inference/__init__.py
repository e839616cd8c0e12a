"""Mask2Former: loading (loading.py), preprocessing (preprocess.py), the batched forward pass
(runner.py) and post-processing equal to transformers' (postprocess.py)."""

from .loading import LoadedModel, load_model
from .runner import ModelRunner

__all__ = ["LoadedModel", "load_model", "ModelRunner"]
