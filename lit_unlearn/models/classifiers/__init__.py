"""Image classifier backbones sharing the :class:`Classifier` interface (features + head)."""

from lit_unlearn.models.classifiers.base import Classifier

__all__ = ["Classifier"]
