"""Image datasets for classification: sources that load one split at a time."""

from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split

__all__ = ["ImageSet", "ImageSource", "Split"]
