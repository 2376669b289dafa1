"""Image datasets for classification: sources that load one split at a time."""

from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split
from lit_unlearn.datamodules.images.bundled import Digits, MNIST5k
from lit_unlearn.datamodules.images.cifar import CIFAR10, CIFAR100
from lit_unlearn.datamodules.images.folder import ImageFolder

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "Digits",
    "ImageFolder",
    "ImageSet",
    "ImageSource",
    "MNIST5k",
    "Split",
]
