"""A small CNN for low-resolution grey digits: sklearn's 8x8 digits and 28x28 MNIST.

ResNet-18 is far more than these datasets need and is slow on CPU; two conv blocks and one
hidden layer reach ~98% on both, train in seconds, and keep the unlearning experiments on
them cheap enough to repeat over many seeds.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_unlearn.models.base import check_positive_int
from lit_unlearn.models.classifiers.base import Classifier, check_dropout

__all__ = ["SmallCNN"]

# Pool after a block only while its map side is at least this: an 8x8 digit is pooled once (to
# 4x4), MNIST twice (28 -> 14 -> 7). Pooling a map smaller than 8 would leave too few positions
# for the next conv's 3x3 window to see structure.
_MIN_POOLED_SIDE = 8


class SmallCNN(Classifier):
    """Conv3x3-BN-ReLU blocks with size-dependent max-pooling, then one hidden dense layer.

    Each entry of ``channels`` adds a block ``conv3x3 -> BatchNorm -> ReLU`` (padding 1, so the
    side is kept), followed by a 2x2 max-pool while the map side is still >= 8. The flattened map
    goes through ``Linear -> ReLU -> Dropout``; that hidden vector is h = M^f(x) (feature_dim =
    ``hidden``) and :attr:`head` maps it to logits.

    Args:
        num_classes: Output classes.
        in_channels: Image channels (1 for grey digits).
        image_size: Square side length of the images (8 for sklearn digits, 28 for MNIST).
        channels: Output channels of each conv block, in order; None means ``[32, 64]``.
        hidden: Width of the hidden dense layer, i.e. the feature dimension.
        dropout: Dropout probability on the features during training (0 disables it).

    Raises:
        ValueError: A size is not a positive int, ``channels`` is empty or holds a non-positive
            entry, or ``dropout`` is not in [0, 1).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 8,
        channels: list[int] | None = None,
        hidden: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.hidden = check_positive_int("hidden", hidden)
        self.dropout = check_dropout(dropout)
        if channels is None:
            channels = [32, 64]
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (list, tuple)):
            raise ValueError(f"channels must be a list of positive ints, got {channels!r}")
        if not channels:
            raise ValueError("channels must list at least one conv block width, e.g. [32, 64]")
        self.channels = [check_positive_int(f"channels[{i}]", c) for i, c in enumerate(channels)]

        layers: list[nn.Module] = []
        side, width = image_size, in_channels
        for out in self.channels:
            # bias=False: BatchNorm's shift makes a conv bias redundant.
            layers += [
                nn.Conv2d(width, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            if side >= _MIN_POOLED_SIDE:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            width = out
        # Not in-place ReLUs: unlearning methods hook activations, which in-place ops overwrite.
        self.conv = nn.Sequential(*layers)
        self.output_side = side
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """h = M^f(x): the hidden dense layer's activations ``[B, hidden]``."""
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} takes a batch [B, C, H, W], got {tuple(x.shape)}"
            )
        # The flatten size is fixed by image_size: say which size to set rather than failing in
        # the Linear layer with a matrix-shape error.
        self.check_input(tuple(x.shape))
        return self.fc(self.conv(x))
