"""Server-side aggregation of the clients' uploads (a small selectable class)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Aggregator", "FedAvg"]


class Aggregator(ABC):
    """Turns the round's uploads into the next global state of the shared parameters."""

    @abstractmethod
    def __call__(
        self, global_params: dict[str, Tensor], deltas: dict[str, Tensor], counts: Tensor
    ) -> dict[str, Tensor]:
        """New shared parameters.

        Args:
            global_params: The round's starting state of every shared parameter.
            deltas: Each client's change ``theta_c - theta``, ``[C, *shape]`` per name.
            counts: Training interactions of each client, ``[C]``.
        """


class FedAvg(Aggregator):
    """FedAvg (McMahan et al. 2017): ``theta + server_lr * sum_c w_c delta_c / sum_c w_c``.

    With ``server_lr = 1`` this is the weighted average of the clients' local models.

    ``rowwise=True`` averages every row of a matrix parameter (an item embedding row, a weight
    row) over the clients whose upload changed that row, as a recommender client that uploads
    only the item rows it touched would be aggregated: a rare item is then updated by its
    few raters instead of being diluted by the ~99% of the round's clients that never saw it
    (with plain FedAvg its step shrinks by ``n_touching / C``). Rows every client changes
    (dense layers) get exactly the FedAvg step either way; untouched rows stay.

    Args:
        weighting: ``interactions`` (``w_c`` = the client's training interactions, FedAU2's
            spec decision 8) or ``uniform``.
        server_lr: Server step on the averaged update.
        rowwise: Average each row over the clients that changed it (see above).
    """

    def __init__(
        self,
        weighting: Literal["interactions", "uniform"] = "interactions",
        server_lr: float = 1.0,
        rowwise: bool = False,
    ) -> None:
        if weighting not in ("interactions", "uniform"):
            raise ValueError(f"weighting must be 'interactions' or 'uniform', got {weighting!r}")
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ValueError(f"server_lr must be a finite float > 0, got {server_lr!r}")
        self.weighting = weighting
        self.server_lr = float(server_lr)
        self.rowwise = rowwise

    def __call__(
        self, global_params: dict[str, Tensor], deltas: dict[str, Tensor], counts: Tensor
    ) -> dict[str, Tensor]:
        w = (
            counts.to(torch.float64)
            if self.weighting == "interactions"
            else torch.ones_like(counts, dtype=torch.float64)
        )
        if not float(w.sum()) > 0:
            raise ValueError("FedAvg: the round's clients have no training interaction")
        out = {}
        for name, theta in global_params.items():
            d = deltas[name]
            wd = w.to(d.dtype).to(d.device)
            if self.rowwise and d.ndim >= 3:
                touched = (d != 0).flatten(2).any(dim=2).to(d.dtype)  # [C, rows]
                row_w = wd.unsqueeze(1) * touched
                norm = row_w.sum(dim=0).clamp_min(torch.finfo(d.dtype).tiny)
                step = torch.einsum("cr,cr...->r...", row_w / norm, d)
            else:
                step = torch.tensordot(wd / wd.sum(), d, dims=1)
            out[name] = theta + self.server_lr * step
        return out
