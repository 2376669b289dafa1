"""The adversary heads of FedAU2: a plain MLP, a VAE head and the dual-stochastic DSVAE head.

All three read a user representation ``x`` and return class logits; the hidden layer is the
same ``z = ReLU(W_1 x + b_1)`` (FedAU2 App. A.3: hidden 100). They differ in the last layer
(FedAU2 Sec. 4.3, Eq. 10 and its ablation, Fig. 4):

* :class:`AttributeHead` (``mlp``): ``u = W z + b``. Its client gradient of the last layer is
  ``(p - y) z^T`` (Cor. 1), so DLG and iDLG read the label from its sign pattern.
* :class:`VariationalHead` with ``kind="vae"``: two projections ``mu = W^mu z + b^mu`` and
  ``sigma = W^sigma z + b^sigma`` and ``u = mu + sigma * eps2``, ``eps2 ~ N(0, I)``. The
  ``mu`` path's gradient is still ``(p - y) z^T`` (Cor. 2): the label still leaks.
* :class:`VariationalHead` with ``kind="dsvae"``: ``u = mu * eps1 + sigma * eps2`` with
  ``eps1 ~ N(1, lambda)`` elementwise (``lambda`` a variance; spec decision 3) drawn fresh at
  every forward. The ``mu`` path's gradient becomes ``(p - y) * eps1 z^T`` (Cor. 3, Eq. 12):
  each class row's sign flips with probability ``Phi(-1/sqrt(lambda))`` (31% at lambda = 4),
  which is what takes DLG's correction term ``delta_i`` towards chance.

Where DSVAE's ``eps1`` sits is an option (spec decision 3): ``noise_site="logits"`` multiplies
``mu`` (Eq. 10, one factor per class), ``noise_site="input"`` multiplies the hidden features
before the ``mu`` projection, ``mu = W^mu (z * eps1) + b^mu`` (Cor. 3 / App. B.4, one factor per
hidden unit). ``sigma`` is a linear projection (no ``exp``) and no KL term enters any loss: the
paper's objective (Eq. 5) is the cross-entropy only.

The noise is drawn from torch's global RNG (``torch.randn_like``), so the heads run under
``torch.func.vmap(randomness="different")`` (one draw per client) and a resumed run draws the
same (the engine seeds every round). In ``eval()`` mode the variational heads return ``mu``
(the noise's mean: ``E[eps1] = 1``, ``E[eps2] = 0``). A caller that needs the *same* noise in
two forwards (SUT with ``sut_skip="grl"``) draws it once with :meth:`VariationalHead.sample_noise`
and passes it in.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttributeHead", "HeadNoise", "VariationalHead", "build_head"]

#: Explicit noise of one forward of a variational head: ``(eps1, eps2)`` (``eps1`` None: VAE).
HeadNoise = tuple[Tensor | None, Tensor]


def _check_sizes(**sizes: int) -> None:
    lows = {"num_classes": 2}
    for name, value in sizes.items():
        low = lows.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _xavier(*layers: nn.Linear) -> None:
    # FedAU2 App. A.3: Xavier initialisation everywhere.
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)


class AttributeHead(nn.Module):
    """The plain adversary ``h``: ``Linear(d, hidden) -> ReLU -> Linear(hidden, classes)``.

    Args:
        input_dim: Width of the user representation it reads (FedNCF: 2d for NeuMF's two
            user embeddings; FedVAE: d; FedRAP: see ``AdversaryTerm.representation``).
        num_classes: Classes of the attribute.
        hidden: Hidden width (FedAU2: 100).
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 100) -> None:
        super().__init__()
        _check_sizes(input_dim=input_dim, num_classes=num_classes, hidden=hidden)
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.hidden = nn.Linear(input_dim, hidden)
        self.out = nn.Linear(hidden, num_classes)
        _xavier(self.hidden, self.out)

    def sample_noise(self, x: Tensor) -> HeadNoise | None:
        """A deterministic head draws nothing."""
        return None

    def forward(self, x: Tensor, noise: HeadNoise | None = None, mean: bool = False) -> Tensor:
        return self.from_hidden(self.hidden(x), noise, mean)

    def from_hidden(self, h: Tensor, noise: HeadNoise | None = None, mean: bool = False) -> Tensor:
        """The logits from the first layer's output ``h = hidden(x)`` (``forward`` is
        ``from_hidden(hidden(x))``: the gradient attack forms ``hidden``'s gradient itself)."""
        return self.out(F.relu(h))


class VariationalHead(nn.Module):
    """FedAU2's VAE / DSVAE adversary head (Sec. 4.3, Eq. 10).

    ``z = ReLU(W_1 x + b_1)``; ``mu = W^mu z + b^mu``; ``sigma = W^sigma z + b^sigma``;
    logits ``u = mu + sigma * eps2`` (``vae``) or ``u = mu * eps1 + sigma * eps2`` (``dsvae``),
    ``eps1 ~ N(1, lambda)``, ``eps2 ~ N(0, I)``, fresh at every forward in training mode.

    The ``mu`` projection is registered last, so it is the head's last ``nn.Linear``: the
    layer iDLG reads (its gradient carries the label, Cor. 2-3).

    Args:
        input_dim: Width of the representation it reads.
        num_classes: Classes of the attribute.
        hidden: Hidden width (FedAU2: 100).
        kind: ``dsvae`` (Eq. 10) or ``vae`` (the ablation without ``eps1``).
        noise_variance: lambda, the variance of ``eps1`` (FedAU2: 4; spec decision 3 reads
            ``N(1, lambda)`` as mean 1, variance lambda).
        noise_site: ``logits`` (Eq. 10: ``eps1`` per class on ``mu``) or ``input`` (Cor. 3:
            ``eps1`` per hidden unit, before the ``mu`` projection).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 100,
        kind: Literal["dsvae", "vae"] = "dsvae",
        noise_variance: float = 4.0,
        noise_site: Literal["logits", "input"] = "logits",
    ) -> None:
        super().__init__()
        _check_sizes(input_dim=input_dim, num_classes=num_classes, hidden=hidden)
        if kind not in ("dsvae", "vae"):
            raise ValueError(f"kind must be 'dsvae' or 'vae', got {kind!r}")
        if noise_site not in ("logits", "input"):
            raise ValueError(f"noise_site must be 'logits' or 'input', got {noise_site!r}")
        if isinstance(noise_variance, bool) or not isinstance(noise_variance, (int, float)):
            raise ValueError(f"noise_variance must be a finite float >= 0, got {noise_variance!r}")
        if not (math.isfinite(noise_variance) and noise_variance >= 0):
            raise ValueError(f"noise_variance must be a finite float >= 0, got {noise_variance!r}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.kind = kind
        self.noise_variance = float(noise_variance)
        self.noise_site = noise_site
        self.hidden = nn.Linear(input_dim, hidden)
        self.sigma = nn.Linear(hidden, num_classes)
        self.mu = nn.Linear(hidden, num_classes)  # last: the layer iDLG reads
        _xavier(self.hidden, self.sigma, self.mu)

    def sample_noise(self, x: Tensor) -> HeadNoise:
        """One forward's ``(eps1, eps2)`` for input ``x`` (``[..., d]``)."""
        lead = x.shape[:-1]
        eps2 = torch.randn(*lead, self.num_classes, dtype=x.dtype, device=x.device)
        if self.kind == "vae":
            return None, eps2
        width = self.num_classes if self.noise_site == "logits" else self.hidden.out_features
        eps1 = 1.0 + math.sqrt(self.noise_variance) * torch.randn(
            *lead, width, dtype=x.dtype, device=x.device
        )
        return eps1, eps2

    def forward(self, x: Tensor, noise: HeadNoise | None = None, mean: bool = False) -> Tensor:
        """Logits; ``mean=True`` (or ``eval()`` without ``noise``): ``mu``, the noise-free mean."""
        return self.from_hidden(self.hidden(x), noise, mean)

    def from_hidden(self, h: Tensor, noise: HeadNoise | None = None, mean: bool = False) -> Tensor:
        """The logits from the first layer's output ``h = hidden(x)`` (the noise is drawn for
        ``h``'s leading shape, as ``forward`` draws it for ``x``'s: the same draws)."""
        z = F.relu(h)
        if mean or (not self.training and noise is None):
            return self.mu(z)
        eps1, eps2 = noise if noise is not None else self.sample_noise(h)
        sigma = self.sigma(z)
        if eps1 is None:  # plain VAE: mu + sigma * eps2
            return self.mu(z) + sigma * eps2
        if self.noise_site == "input":  # Cor. 3: W^mu (z * eps1)
            return self.mu(z * eps1) + sigma * eps2
        return self.mu(z) * eps1 + sigma * eps2  # Eq. 10


def build_head(
    kind: Literal["mlp", "vae", "dsvae"],
    input_dim: int,
    num_classes: int,
    hidden: int = 100,
    noise_variance: float = 4.0,
    noise_site: Literal["logits", "input"] = "logits",
) -> AttributeHead | VariationalHead:
    """The adversary head of FedAU2's ablation (Fig. 4): ``mlp``, ``vae`` or ``dsvae``."""
    if kind == "mlp":
        return AttributeHead(input_dim, num_classes, hidden)
    if kind in ("vae", "dsvae"):
        return VariationalHead(input_dim, num_classes, hidden, kind, noise_variance, noise_site)
    raise ValueError(f"head must be 'mlp', 'vae' or 'dsvae', got {kind!r}")
