"""Image classifier backbones sharing the :class:`Classifier` interface (features + head)."""

from lit_unlearn.models.classifiers.base import Classifier
from lit_unlearn.models.classifiers.cnn import SmallCNN
from lit_unlearn.models.classifiers.resnet import CifarResNet18
from lit_unlearn.models.classifiers.vit import VisionTransformer

__all__ = ["CifarResNet18", "Classifier", "SmallCNN", "VisionTransformer"]
