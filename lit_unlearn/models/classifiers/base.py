"""The interface every image classifier backbone shares: ``logits = head(features(x))``.

DSDA (paper 004, Sec. 3.1) writes the model as M = M^c o M^f: feature layers M^f and a final
linear classifier M^c. Class-unlearning methods need both halves (DAMO's discriminative loss
works on h = M^f(x); SSD dampens any parameter; GKT distils logits), so a backbone exposes
:meth:`Classifier.features` and :attr:`Classifier.head` rather than only ``forward``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from lit_unlearn.models.base import check_dropout

__all__ = ["Classifier", "check_dropout"]


class Classifier(nn.Module, ABC):
    """An image classifier split into a feature extractor and a linear head.

    Subclasses set :attr:`num_classes`, :attr:`in_channels`, :attr:`image_size` (``None`` when
    any spatial size works) and :attr:`head` (``nn.Linear(feature_dim, num_classes)``) in their
    ``__init__`` and implement :meth:`features`.

    Attributes:
        num_classes: Output classes.
        in_channels: Image channels the first layer expects (1 grey, 3 RGB).
        image_size: Square side length the backbone expects, or None when it is size-agnostic.
        head: The final classifier layer M^c.
    """

    num_classes: int
    in_channels: int
    image_size: int | None
    head: nn.Linear

    @property
    def feature_dim(self) -> int:
        """Width of h = M^f(x) (the head's input)."""
        return int(self.head.in_features)

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """h = M^f(x): ``[B, feature_dim]`` from normalised images ``[B, C, H, W]``."""

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` = M^c(M^f(x))."""
        return self.head(self.features(x))

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse image batches this backbone cannot take, naming what it expects.

        Args:
            shape: A batch shape ``(B, C, H, W)`` or one image's ``(C, H, W)``.

        Raises:
            ValueError: Wrong rank, channel count or spatial size.
        """
        dims = tuple(int(s) for s in shape[-3:]) if len(shape) >= 3 else tuple(shape)
        name = type(self).__name__
        if len(shape) not in (3, 4):
            raise ValueError(f"{name} takes images [B, C, H, W], got shape {tuple(shape)}")
        channels, height, width = dims
        if channels != self.in_channels:
            raise ValueError(
                f"{name} was built for {self.in_channels}-channel images, the data has "
                f"{channels} channels (shape {tuple(shape)}): set in_channels={channels}"
            )
        if self.image_size is not None and (height, width) != (self.image_size, self.image_size):
            raise ValueError(
                f"{name} was built for {self.image_size}x{self.image_size} images, the data is "
                f"{height}x{width}: set image_size={height} (square images only)"
                if height == width
                else f"{name} takes square {self.image_size}x{self.image_size} images, got "
                f"{height}x{width}"
            )
