"""Mask2Former: loading, preprocessing, the forward pass and post-processing."""

from .loading import LoadedModel, load_model
from .postprocess import postprocess
from .preprocess import PreprocessSpec, preprocess
from .runner import ModelRunner

__all__ = ["LoadedModel", "load_model", "postprocess", "PreprocessSpec", "preprocess", "ModelRunner"]
