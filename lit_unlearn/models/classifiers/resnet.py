"""ResNet-18 in its CIFAR form: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep detail.

The ImageNet ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016)
opens with a 7x7 stride-2 convolution and a max-pool, shrinking a 32x32 CIFAR image to 8x8
before the first residual stage. The variant every CIFAR unlearning paper trains (the widely
copied ``kuangliu/pytorch-cifar`` layout) swaps that stem for one 3x3 stride-1 convolution, so the
four stages see 32, 16, 8 and 4 pixel maps. With 10 classes it has 11,173,962 parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_unlearn.models.base import check_positive_int
from lit_unlearn.models.classifiers.base import Classifier

__all__ = ["BasicBlock", "CifarResNet18"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: ``relu(bn(conv(relu(bn(conv(x))))) + s(x))``.

    The shortcut ``s`` is the identity when shape is kept and a 1x1 strided conv + BN when the
    block changes width or resolution (option B of He et al.): it costs few parameters and,
    unlike zero-padding, lets the shortcut learn.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (2 halves the map side).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # bias=False: the BN that follows has its own shift, a conv bias would be redundant.
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        """The residual block's output ``[B, planes, H / stride, W / stride]``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet18(Classifier):
    """CIFAR ResNet-18: 3x3 stem, four stages of two :class:`BasicBlock` s, global average pool.

    Stage widths are ``width, 2 width, 4 width, 8 width`` (64/128/256/512 at the default), and
    stages 2-4 halve the resolution. Global average pooling makes the network accept any square or
    rectangular size, so :attr:`image_size` is None unless one is given to pin it (then
    :meth:`check_input` refuses other sizes).

    Args:
        num_classes: Output classes.
        in_channels: Image channels (3 for CIFAR, 1 for grey images).
        width: Channels of the stem and first stage; 64 is the standard ResNet-18. Smaller
            values give a cheaper network of the same depth (feature_dim = 8 * width).
        image_size: Square side length to enforce in :meth:`check_input`, or None for any size.

    Raises:
        ValueError: A size is not a positive int.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.width = check_positive_int("width", width)
        self.image_size = (
            None if image_size is None else check_positive_int("image_size", image_size)
        )
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, widths[0], stride=1)
        self.layer2 = self._stage(widths[0], widths[1], stride=2)
        self.layer3 = self._stage(widths[1], widths[2], stride=2)
        self.layer4 = self._stage(widths[2], widths[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes)
        self.reset_parameters()

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        """Two basic blocks; the first changes width and (stride 2) halves the resolution."""
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, ReLU gain), BN at identity, default-initialised head.

        He initialisation keeps activation variance roughly constant through the ReLU stack, so
        an 18-layer network trains from scratch without warm-up; fan_out with BN at weight 1 and
        bias 0 is the torchvision ResNet initialisation.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.head.reset_parameters()

    def features(self, x: Tensor) -> Tensor:
        """h = M^f(x): the globally average-pooled last stage ``[B, 8 * width]``."""
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} takes a batch [B, C, H, W], got {tuple(x.shape)}"
            )
        self.check_input(tuple(x.shape))
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)
