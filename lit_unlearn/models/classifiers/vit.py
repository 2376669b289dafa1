"""A Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) for
small images.

The defaults (4x4 patches of a 32x32 image: 64 tokens plus a class token; width 192, 6 pre-norm
blocks of 3 heads) are a ViT-Tiny-sized network that trains from scratch on CIFAR, the setting
of the class-unlearning papers that evaluate a transformer next to ResNet-18.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_unlearn.models.base import check_positive_int
from lit_unlearn.models.classifiers.base import Classifier, check_dropout

__all__ = ["Attention", "TransformerBlock", "VisionTransformer"]


class Attention(nn.Module):
    """Multi-head self-attention ``softmax(q k^T / sqrt(d_head)) v`` over a token sequence.

    Written out with matmul and softmax rather than ``F.scaled_dot_product_attention``: the fused
    CPU kernel has no double backward, and unlearning methods that take Hessian-vector products
    or per-sample gradients (``torch.func``) need every op differentiable to any order. With 65
    tokens the attention matrix is tiny, so the fused kernel would save little.

    Args:
        dim: Token width.
        heads: Attention heads; must divide ``dim``.
        dropout: Dropout on the attention weights and on the output projection.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        # One projection for q, k and v: a single larger matmul instead of three.
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over ``x`` ``[B, N, dim]``; returns ``[B, N, dim]``."""
        b, n, d = x.shape
        # [B, N, 3 * dim] -> 3 x [B, heads, N, d_head]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Normalising before each sub-layer (rather than after the residual sum, as in the original
    Transformer) keeps the residual path an identity, which is what lets ViTs train from scratch
    without learning-rate warm-up tricks at this depth.

    Args:
        dim: Token width.
        heads: Attention heads; must divide ``dim``.
        mlp_hidden: Hidden width of the two-layer GELU MLP.
        dropout: Dropout inside attention and after each MLP layer.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The block's output tokens ``[B, N, dim]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(Classifier):
    """ViT: conv patch embedding, class token, learned positions, pre-norm blocks, final LayerNorm.

    The image is cut into ``(image_size / patch_size)^2`` non-overlapping patches, each projected
    to ``dim`` by a strided convolution (the same as a linear map of the flattened patch). A
    learned class token is prepended and learned position embeddings are added; after ``depth``
    blocks and a LayerNorm, the class token is h = M^f(x) (feature_dim = ``dim``).

    Args:
        num_classes: Output classes.
        in_channels: Image channels (3 for CIFAR).
        image_size: Square side length of the images; position embeddings are learned for exactly
            this size.
        patch_size: Side length of the square patches; must divide ``image_size``.
        dim: Token width.
        depth: Number of transformer blocks.
        heads: Attention heads per block; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: Dropout on the embeddings, attention weights and MLP (0 disables it).

    Raises:
        ValueError: A size is not a positive int, ``patch_size`` does not divide ``image_size``,
            ``heads`` does not divide ``dim``, ``mlp_ratio`` is not a positive finite number or
            ``dropout`` is not in [0, 1).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.dim = check_positive_int("dim", dim)
        self.depth = check_positive_int("depth", depth)
        self.heads = check_positive_int("heads", heads)
        self.dropout = check_dropout(dropout)
        if image_size % patch_size:
            divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
            raise ValueError(
                f"patch_size={patch_size} does not divide image_size={image_size}: set patch_size "
                f"to one of {divisors}"
            )
        if dim % heads:
            raise ValueError(
                f"heads={heads} does not divide dim={dim}: set dim to a multiple of heads "
                f"(e.g. dim={heads * max(1, round(dim / heads))}) or heads to a divisor of dim"
            )
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)):
            raise ValueError(f"mlp_ratio must be a positive float, got {mlp_ratio!r}")
        mlp_hidden = int(dim * mlp_ratio) if math.isfinite(mlp_ratio) else 0
        if mlp_hidden < 1:
            raise ValueError(
                f"mlp_ratio must be a positive finite float with dim * mlp_ratio >= 1, got "
                f"mlp_ratio={mlp_ratio!r} (dim={dim})"
            )
        self.mlp_ratio = float(mlp_ratio)
        self.num_patches = (image_size // patch_size) ** 2

        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        self.pos_drop = nn.Dropout(self.dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_hidden, self.dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal (std 0.02) linears, tokens and positions; LayerNorms at identity.

        The small-std initialisation of the original ViT / timm code keeps each residual branch
        near zero at the start, so the deep stack begins close to the identity map. The head is
        initialised like the other linears, not zeroed (as timm does for fine-tuning): a zero head
        would give the features no gradient on the first step.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The patch projection is a linear map of the flattened patch: Xavier on that view.
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.dim, -1))
        assert self.patch_embed.bias is not None
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def features(self, x: Tensor) -> Tensor:
        """h = M^f(x): the final-LayerNorm class token ``[B, dim]``."""
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} takes a batch [B, C, H, W], got {tuple(x.shape)}"
            )
        # The position embeddings fix the token count: name the size to set instead of failing
        # in a broadcast.
        self.check_input(tuple(x.shape))
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, num_patches, dim]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.pos_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        return self.norm(self.blocks(tokens))[:, 0]
