"""Tensor containers shared by data modules, tasks, attacks and unlearning methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class UserAttributes:
    """Encoded user attributes, aligned with the model's contiguous user ids.

    Attributes:
        codes: ``name -> LongTensor[num_users]`` class codes, ``-1`` where unknown.
        classes: ``name -> class names``; code ``k`` means ``classes[name][k]``. Class order is
            sorted (or the paper's natural order for ordinal groups), never set order, so the
            same data always gives the same codes.
        shadow: ``BoolTensor[num_users]``: users whose attributes the attacker knows (the shadow
            set it trains on, 20% by default). Attacks are measured on ``~shadow``.
    """

    codes: dict[str, Tensor]
    classes: dict[str, list[str]]
    shadow: Tensor = field(repr=False)

    def __post_init__(self) -> None:
        if set(self.codes) != set(self.classes):
            raise ValueError(
                f"codes {sorted(self.codes)} and classes {sorted(self.classes)} differ"
            )
        n = int(self.shadow.numel())
        for name, c in self.codes.items():
            if c.dtype != torch.long or c.ndim != 1 or c.numel() != n:
                raise ValueError(
                    f"attribute {name!r}: codes must be LongTensor[{n}], "
                    f"got {c.dtype} {tuple(c.shape)}"
                )
            if c.numel() and int(c.max()) >= len(self.classes[name]):
                raise ValueError(
                    f"attribute {name!r}: code {int(c.max())} >= {len(self.classes[name])} classes"
                )

    @property
    def names(self) -> list[str]:
        """Attribute names in insertion (config) order."""
        return list(self.codes)

    @property
    def num_users(self) -> int:
        return int(self.shadow.numel())

    def num_classes(self, name: str) -> int:
        """Number of classes of attribute ``name``."""
        return len(self.classes[self._check(name)])

    def _check(self, name: str) -> str:
        if name not in self.codes:
            raise KeyError(f"unknown attribute {name!r}; this data has {self.names}")
        return name
