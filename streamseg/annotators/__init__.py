"""Drawing results over frames."""

from .masks import MaskAnnotator, class_color

__all__ = ["MaskAnnotator", "class_color"]
