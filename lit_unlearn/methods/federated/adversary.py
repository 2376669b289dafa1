"""A shared attribute classifier on the client's user representation, and what the server
records of it.

:class:`AdversaryTerm` adds ``weight * CE(h(GRL(em_u)), y_u)`` to a client's local objective
(FedAU2 Eq. 5): ``h`` is a 2-layer MLP (hidden 100) shared and aggregated like the item side.
``grl_scale`` is the gradient-reversal factor epsilon: the forward is the identity, the backward
multiplies the gradient reaching ``em_u`` by ``-epsilon`` (Ganin & Lempitsky 2015; FedAU2:
epsilon = 400). ``grl_scale = 0`` makes ``h`` a pure observer trained on the attribute (no
gradient reaches the representation): the plain "Original + adversary head" whose uploads the
gradient-inversion attack reads. FedAU2's strategies (SUT, DSVAE) build on this term.

:class:`UploadRecorder` is the honest-but-curious server: it keeps each client's latest upload
of the head, with the global head it was computed from (FedAU2 App. A.2).
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.methods.federated.engine import ClientUpdate
from lit_unlearn.methods.federated.objectives import ClientTerm, LocalLoss
from lit_unlearn.models.base import Recommender

__all__ = ["AdversaryTerm", "AttributeHead", "UploadRecorder", "gradient_reversal"]


class _GradientReversal(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, scale: float) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: Tensor) -> None:
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def gradient_reversal(x: Tensor, scale: float) -> Tensor:
    """GRL(x): identity forward, gradient times ``-scale`` backward (0: no gradient at all)."""
    if scale == 0:
        return x.detach()
    return cast(Tensor, _GradientReversal.apply(x, scale))


class AttributeHead(nn.Module):
    """The adversary ``h``: ``Linear(d, hidden) -> ReLU -> Linear(hidden, classes)`` (logits).

    Args:
        input_dim: Width of the user representation it reads (FedNCF: 2d for NeuMF's two
            user embeddings; FedVAE: d; FedRAP: see the backbone).
        num_classes: Classes of the attribute.
        hidden: Hidden width (FedAU2: 100).
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 100) -> None:
        super().__init__()
        for name, value, low in (("input_dim", input_dim, 1), ("num_classes", num_classes, 2),
                                 ("hidden", hidden, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.hidden = nn.Linear(input_dim, hidden)
        self.out = nn.Linear(hidden, num_classes)
        for layer in (self.hidden, self.out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(x)))


class AdversaryTerm(ClientTerm):
    """``weight * CE(h(GRL(em_u)), y_u)`` on the client's own representation and label.

    A client whose label is unknown (``-1``) adds nothing (documented skip: it cannot train
    the adversary). The head's parameters are shared: uploaded and aggregated.

    Args:
        head: The adversary (default: :class:`AttributeHead` with the given sizes).
        input_dim: Representation width (used when ``head`` is None).
        num_classes: Attribute classes (used when ``head`` is None).
        weight: lambda of Eq. 5 (unstated in the paper; spec decision 2: 1).
        grl_scale: epsilon of the gradient reversal (0: observer, FedAU2: 400).
        lr: The head's own client learning rate (FedAU2: 0.1 FedNCF / 0.001 FedVAE / 0.1
            FedRAP); None: the clients' optimiser and lr.
        optimizer: The head's own optimiser when ``lr`` is set (``sgd``: its uploads are the
            summed local gradients, FedAU2's threat model).
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        input_dim: int = 64,
        num_classes: int = 2,
        weight: float = 1.0,
        grl_scale: float = 0.0,
        lr: float | None = None,
        optimizer: Literal["sgd", "adam"] = "sgd",
    ) -> None:
        super().__init__()
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite float > 0 or None, got {lr!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.lr = None if lr is None else float(lr)
        self.optimizer = optimizer
        for name, value in (("weight", weight), ("grl_scale", grl_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
        self.head = head if head is not None else AttributeHead(input_dim, num_classes)
        self.weight = float(weight)
        self.grl_scale = float(grl_scale)

    def logits(self, representation: Tensor) -> Tensor:
        """The head's logits on a representation ``[r]`` or ``[N, r]``."""
        return self.head(gradient_reversal(representation, self.grl_scale))

    def forward(
        self,
        model: Recommender,
        local_loss: LocalLoss,
        batch: dict[str, Tensor],
        label: Tensor,
    ) -> Tensor:
        rep = local_loss.representation(model, batch)
        logits = self.logits(rep)
        known = (label >= 0).to(logits.dtype)
        ce = F.cross_entropy(logits.unsqueeze(0), label.clamp_min(0).reshape(1))
        return self.weight * known * ce


class UploadRecorder:
    """Keeps every client's latest upload of the parameters under ``prefix`` (a server log).

    Call it as an upload hook (``task.add_upload_hook(recorder)``). For each user it stores
    the round, the global values the client started from and its delta.

    Args:
        prefix: Parameter-name prefix to keep (the adversary head: ``terms.0.head.``).
    """

    def __init__(self, prefix: str = "terms.0.head.") -> None:
        self.prefix = prefix
        self.latest: dict[int, dict[str, Any]] = {}

    def __call__(self, update: ClientUpdate) -> None:
        names = [n for n in update.deltas if n.startswith(self.prefix)]
        if not names:
            return
        for c, user in enumerate(update.clients.tolist()):
            self.latest[user] = {
                "round": update.round_index,
                "lr": {n[len(self.prefix) :]: update.lr[n] for n in names},
                "optimizer": {n[len(self.prefix) :]: update.optimizer[n] for n in names},
                "start": {n[len(self.prefix) :]: update.start[n].detach().cpu() for n in names},
                "delta": {n[len(self.prefix) :]: update.deltas[n][c].detach().cpu() for n in names},
            }

    def users(self) -> list[int]:
        """Users with a recorded upload, sorted."""
        return sorted(self.latest)
