"""Gradient-inversion attacks on an uploaded adversary head: label recovery by DLG and iDLG.

In user-level federated recommenders trained with an adversarial head ``h_w`` (FedAU2, paper
001), every client trains the shared head on its own single ``(embedding, label)`` pair and
uploads the result. An honest-but-curious server that keeps each client's latest upload and the
head's parameters at that time (FedAU2 App. A.2) can try to read the private label back out of
the upload:

* :func:`idlg_labels` (Zhao et al. 2020): analytic. For softmax cross-entropy on one sample the
  last layer's gradient is ``dL/dW_i = (p_i - y_i) h`` and ``dL/db_i = p_i - y_i``; with
  ``h >= 0`` (post-ReLU features) the true class is the only row with a negative sum.
* :func:`dlg_attack` (Zhu et al. 2019; FedAU2 Eq. 4): optimise a dummy embedding ``em'`` and a
  dummy soft label ``softmax(y')`` with L-BFGS until their gradient matches the observed one;
  the recovered label is ``argmax y'``. Run for all users at once by a vectorised L-BFGS that
  keeps one curvature history per user (see :func:`dlg_attack`).
* :func:`evaluate_label_recovery` scores recovered labels against the truth next to the chance
  and majority-class baselines (:class:`LabelRecoveryResult`).

FedAU2's DSVAE head (Sec. 4.3, Eq. 10) is the defence: its logits are
``u = mu * eps1 + sigma * eps2`` with ``eps1 ~ N(1, lambda)``, so the client's gradient of the
``mu`` projection is ``(p_i - y_i) * eps1_i * z`` (Cor. 3, Eq. 12). ``eps1`` flips the sign of
each class's row at random, which breaks iDLG's sign rule (its argmin still beats chance: see
:func:`idlg_labels`), and the dummy forward draws its own noise ``eps1'``, so DLG's correction
term ``delta_i`` of Thm 1 is scaled by the random ``eps1^T eps1'`` and DLG falls to chance.

Everything here is plain PyTorch on tensors; the attacks never touch the model that produced
the upload, only the head (an ``nn.Module`` used through :func:`torch.func.functional_call`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lit_unlearn.attacks.mlp import _torch_threads
from lit_unlearn.attacks.scores import (
    accuracy,
    balanced_accuracy,
    chance_level,
    majority_baseline,
    majority_class,
)

__all__ = [
    "UNDETERMINED",
    "DLGResult",
    "LabelRecoveryResult",
    "dlg_attack",
    "evaluate_label_recovery",
    "gradient_from_update",
    "idlg_labels",
]

#: Label code returned by :func:`idlg_labels` for a user whose gradient carries no label
#: information (an all-zero score, or with ``strict=True`` not exactly one negative entry).
UNDETERMINED = -1

Randomness = Literal["error", "different", "same"]
Distance = Literal["l2", "cosine"]
MultiStep = Literal["sum", "mean", "unroll"]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_finite(name: str, tensors: Mapping[str, Tensor]) -> None:
    for key, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            if t.ndim == 0:
                raise ValueError(f"{name}[{key!r}] is not finite")
            bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).sum())
            raise ValueError(
                f"{name}[{key!r}] holds NaN/inf ({bad} of {t.shape[0]} leading rows); a diverged "
                "upload cannot be attacked as if it were an honest gradient"
            )


def _check_keys(name: str, given: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    missing = sorted(set(expected) - set(given))
    unknown = sorted(set(given) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{name} keys must be the head's parameter names {sorted(expected)}; "
            f"missing {missing}, unknown {unknown}"
        )


def _batch_dims(
    name: str, given: Mapping[str, Tensor], reference: Mapping[str, Tensor]
) -> tuple[dict[str, int | None], int | None]:
    """Which tensors are per-user (``[B, *shape]``) and which shared (``shape``), and ``B``."""
    dims: dict[str, int | None] = {}
    users: int | None = None
    for key, ref in reference.items():
        t = given[key]
        if tuple(t.shape) == tuple(ref.shape):
            dims[key] = None
        elif t.ndim == ref.ndim + 1 and tuple(t.shape[1:]) == tuple(ref.shape):
            dims[key] = 0
            if users is not None and t.shape[0] != users:
                raise ValueError(
                    f"{name} disagree on the number of users: {users} vs {t.shape[0]} ({key!r})"
                )
            users = int(t.shape[0])
        else:
            raise ValueError(
                f"{name}[{key!r}] has shape {tuple(t.shape)}; expected the parameter's shape "
                f"{tuple(ref.shape)} or [num_users, *{tuple(ref.shape)}]"
            )
    return dims, users


def _int_at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------


def gradient_from_update(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor], lr: float
) -> dict[str, Tensor]:
    """The gradient a client applied, from its parameter update: ``(before - after) / lr``.

    A client that uploads parameters (or a delta) after one plain SGD step ``w - lr * g``
    reveals ``g`` exactly. After several local steps, momentum or weight decay, the result is
    the *sum* of gradients taken at different parameters (plus those terms), which the attacks
    treat as one gradient at ``before``; expect lower recovery accuracy then.

    Args:
        before: Parameters the client started from (the server's broadcast), name -> tensor.
        after: Parameters it uploaded, same names and shapes (optionally ``[num_users, ...]``).
        lr: The client's learning rate (> 0).

    Returns:
        ``{name: (before - after) / lr}``.

    Raises:
        ValueError: Different names, incompatible shapes or ``lr <= 0``.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if set(before) != set(after):
        raise ValueError(
            f"before and after hold different parameters: {sorted(set(before) ^ set(after))}"
        )
    out: dict[str, Tensor] = {}
    for key, b in before.items():
        a = after[key]
        # Equal shapes, or one side per-user ([num_users, *shape]) and the other shared.
        if not (
            a.shape == b.shape
            or (a.ndim == b.ndim + 1 and a.shape[1:] == b.shape)
            or (b.ndim == a.ndim + 1 and b.shape[1:] == a.shape)
        ):
            raise ValueError(f"{key!r}: before {tuple(b.shape)} vs after {tuple(a.shape)}")
        out[key] = (b - a) / lr
    return out


# ---------------------------------------------------------------------------------------------
# iDLG
# ---------------------------------------------------------------------------------------------


def idlg_labels(
    weight_grad: Tensor, bias_grad: Tensor | None = None, strict: bool = False
) -> Tensor:
    """iDLG (Zhao et al. 2020): each user's label from the sign of the last layer's gradient.

    For softmax cross-entropy on a single sample with logits ``s = W h + b``,
    ``dL/dW_i = (p_i - y_i) h`` and ``dL/db_i = p_i - y_i``. Since ``0 < p_i < 1``, the factor
    ``p_i - y_i`` is negative for the true class only; when every entry of ``h`` is ``>= 0``
    (post-ReLU features, as in FedAU2's MLP head) the row sums of ``dL/dW`` inherit that sign.
    The score ``sum_j dL/dW_ij (+ dL/db_i)`` therefore has exactly one negative entry, at the
    true label, and the label is its argmin.

    Assumptions (what the server must know or hope): the upload is the gradient of one sample's
    cross-entropy (one local SGD step; see :func:`gradient_from_update`), the logits are a
    linear map of non-negative features, and no noise multiplies the logits. For FedAU2's DSVAE
    head pass the ``mu`` projection's gradient: there it is ``(p_i - y_i) * eps1_i * z``
    (Cor. 3, Eq. 12) with ``eps1 ~ N(1, lambda)``, so each row's sign is flipped independently
    with probability ``Phi(-1 / sqrt(lambda))`` (0.31 at ``lambda = 4``). That noise is what
    defeats the sign rule (Sec. 4.3); with two classes the argmin is still right with
    probability ``P(eps1_0 + eps1_1 > 0) = Phi(sqrt(2 / lambda))`` (0.76 at ``lambda = 4``),
    so DSVAE weakens iDLG rather than bringing it to chance.

    Args:
        weight_grad: Gradient of the last layer's weight, ``[num_classes, hidden]`` for one user
            or ``[num_users, num_classes, hidden]``.
        bias_grad: Gradient of its bias, ``[num_classes]`` or ``[num_users, num_classes]``, if
            the layer has one. It obeys the sign rule even when ``h`` is all zero (dead ReLUs).
        strict: If true, a user whose score does not have exactly one negative entry (the rule's
            assumptions are violated) gets :data:`UNDETERMINED` instead of the argmin.

    Returns:
        ``int64[num_users]`` labels in ``[0, num_classes)``, or :data:`UNDETERMINED` (-1) where
        the score is all zero (a gradient that carries no label information, e.g. an all-zero
        upload) or, with ``strict``, ambiguous.

    Raises:
        ValueError: Wrong shapes, fewer than 2 classes, no users, or NaN/inf gradients.
    """
    if weight_grad.ndim == 2:
        weight_grad = weight_grad.unsqueeze(0)
        if bias_grad is not None:
            bias_grad = bias_grad.unsqueeze(0)
    if weight_grad.ndim != 3:
        raise ValueError(
            "weight_grad must be [num_classes, hidden] or [num_users, num_classes, hidden], "
            f"got shape {tuple(weight_grad.shape)}"
        )
    num_users, num_classes = int(weight_grad.shape[0]), int(weight_grad.shape[1])
    if num_users == 0:
        raise ValueError("weight_grad holds no users")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes} row(s) in weight_grad")
    tensors = {"weight_grad": weight_grad}
    if bias_grad is not None:
        if tuple(bias_grad.shape) != (num_users, num_classes):
            raise ValueError(
                f"bias_grad has shape {tuple(bias_grad.shape)}; expected "
                f"{(num_users, num_classes)} to match weight_grad"
            )
        tensors["bias_grad"] = bias_grad
    _check_finite("gradient", tensors)
    # float64 so that a sum of many small same-signed terms cannot round across zero.
    score = weight_grad.detach().double().sum(dim=2)
    if bias_grad is not None:
        score = score + bias_grad.detach().double()
    labels = score.argmin(dim=1)
    undetermined = (score == 0).all(dim=1)
    if strict:
        undetermined |= (score < 0).sum(dim=1) != 1
    return torch.where(undetermined, torch.full_like(labels, UNDETERMINED), labels)


# ---------------------------------------------------------------------------------------------
# DLG
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DLGResult:
    """What :func:`dlg_attack` reconstructed for each user (row ``i`` is user ``i``).

    Attributes:
        labels: ``int64[B]`` recovered labels, ``argmax y'`` at the last iterate.
        label_probs: ``[B, C]`` the dummy soft labels ``softmax(y')``.
        embeddings: ``[B, D]`` the dummy embeddings ``em'``.
        loss: ``[B]`` final gradient distance ``sum_params ||grad' - grad||^2`` (Eq. 4);
            near 0 means the reconstruction explains the upload.
        iterations: ``int64[B]`` L-BFGS iterations (parameter updates) spent on the user, over
            all attempts.
        attempts: ``int64[B]`` random starts tried for the user (1 without restarts).
    """

    labels: Tensor
    label_probs: Tensor
    embeddings: Tensor
    loss: Tensor
    iterations: Tensor
    attempts: Tensor


def _input_dim(head: nn.Module) -> int:
    for module in head.modules():
        if isinstance(module, nn.Linear) and not isinstance(module, nn.LazyLinear):
            return int(module.in_features)
    raise ValueError(f"cannot infer the input dim of {type(head).__name__}; pass input_dim")


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNG (which a stochastic head's noise comes from) and restore it after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _rng_state(device: torch.device) -> Tensor:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.random.get_rng_state()


def _set_rng_state(state: Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.random.set_rng_state(state)


#: The parameters of the first layer the structured path differentiates by hand.
_FIRST_LAYER = ("hidden.weight", "hidden.bias")


class _FromHidden(nn.Module):
    """``head.from_hidden`` as a module's forward (so ``functional_call`` can run it)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, h: Tensor) -> Tensor:
        return self.head.from_hidden(h)  # type: ignore[operator]


def _structured_head(head: nn.Module, input_dim: int, names: set[str]) -> bool:
    """Whether ``head`` is ``from_hidden(hidden(x))`` with a biased ``nn.Linear`` ``hidden``
    reading the dummy input (FedAU2's heads): the structured DLG path applies."""
    first = getattr(head, "hidden", None)
    return (
        isinstance(first, nn.Linear)
        and first.bias is not None
        and first.in_features == input_dim
        and callable(getattr(head, "from_hidden", None))
        and set(_FIRST_LAYER) <= names
    )


class _MatchObjective:
    """The per-user DLG objective of Eq. 4 and its gradient, vectorised over users.

    ``x = [em', y']`` per user; the value is ``sum_k ||d CE(h(em'), softmax(y')) / d w_k - g_k||^2``
    over the head's parameters ``w_k`` at that user's upload. Every user gets its own copy of the
    parameters (a view for shared ones) and ``vmap`` runs the head once per user, so the
    backward of the summed cross-entropy yields each user's own dummy gradient, and the backward
    of the summed distances each user's own ``d value / d x``: the users' objectives share no
    variable. (Plain autograd over a ``vmap``-ed forward is about twice as fast as nesting
    ``torch.func.grad`` in ``vmap`` for the small working sets L-BFGS ends with.)

    With ``local_steps`` (``unroll``) the dummy gradient is the sum of ``K_u`` plain SGD steps
    of the head at the user's ``local_lr`` from the start parameters on the one dummy pair,
    ``sum_k grad_k = (w_0 - w_K) / lr``: what the client's upload is when its own input does not
    move between steps. With ``distance="cosine"`` the value is ``1 - cos(dummy, observed)``
    over all parameters flattened together (Geiping et al. 2020) instead of the squared L2.
    """

    def __init__(
        self,
        head: nn.Module,
        params: dict[str, Tensor],
        param_dims: dict[str, int | None],
        observed: dict[str, Tensor],
        input_dim: int,
        randomness: Randomness,
        fixed_noise: bool = False,
        local_steps: Tensor | None = None,
        local_lr: Tensor | None = None,
        distance: Distance = "l2",
        hard_label: int | None = None,
        structured: bool = False,
    ) -> None:
        self.params = params
        self.structured = structured
        self.hard_label = hard_label
        self.param_dims = param_dims
        self.observed = observed
        self.input_dim = input_dim
        self.fixed_noise = fixed_noise
        self.local_steps = local_steps
        self.local_lr = local_lr
        self.distance = distance
        device = next(iter(observed.values())).device
        # Replaying the global RNG from here before every evaluation gives a stochastic head the
        # same noise draws each time (per user with randomness="different", as long as the
        # batch keeps its rows: see _batched_lbfgs's `compact`).
        self._rng = _rng_state(device) if fixed_noise else None
        self._device = device

        def forward(p: dict[str, Tensor], em: Tensor) -> Tensor:
            # The head sees a batch of one, as the client's forward did.
            return functional_call(head, p, (em.unsqueeze(0),)).squeeze(0)

        self._forward = vmap(forward, in_dims=(0, 0), randomness=randomness)
        # The structured path (see __call__): the first layer by hand, the rest of the head
        # (``from_hidden``) per user under vmap.
        self._rest = [k for k in params if k not in _FIRST_LAYER]
        wrapper = _FromHidden(head)

        def forward_rest(p: dict[str, Tensor], h: Tensor) -> Tensor:
            named = {f"head.{k}": v for k, v in p.items()}
            return functional_call(wrapper, named, (h.unsqueeze(0),)).squeeze(0)

        self._forward_rest = vmap(forward_rest, in_dims=(0, 0), randomness=randomness)
        self._weight_sq = torch.zeros(0)
        self._observed_sq = torch.zeros(0)
        self._params_sel = params
        self._observed_sel = observed
        self._steps_sel = local_steps
        self._lr_sel = local_lr
        self.select(torch.arange(next(iter(observed.values())).shape[0], device=device))

    def select(self, index: Tensor) -> None:
        """Restrict later calls to users ``index`` (called only when the working set shrinks)."""
        size = index.numel()
        self._params_sel = {
            k: v.unsqueeze(0).expand(size, *v.shape)
            if self.param_dims[k] is None
            else v.index_select(0, index)
            for k, v in self.params.items()
        }
        self._observed_sel = {k: v.index_select(0, index) for k, v in self.observed.items()}
        if self.structured:
            self._weight_sq = self._observed_sel["hidden.weight"].pow(2).flatten(1).sum(dim=1)
            self._observed_sq = sum(
                (v.pow(2).flatten(1).sum(dim=1) for v in self._observed_sel.values()),
                torch.zeros_like(self._weight_sq),
            )
        if self.local_steps is not None and self.local_lr is not None:
            self._steps_sel = self.local_steps.index_select(0, index)
            self._lr_sel = self.local_lr.index_select(0, index)

    def _dummy_gradients(
        self, names: list[str], leaves: list[Tensor], em: Tensor, target: Tensor
    ) -> list[Tensor | None]:
        """Each user's dummy gradient (one step, or the sum over its unrolled SGD steps)."""

        def step(current: list[Tensor]) -> tuple[Tensor | None, ...]:
            out = self._forward(dict(zip(names, current, strict=True)), em)
            # Soft-label cross-entropy (the reference's cross_entropy_for_onehot), summed over
            # users: each user's term depends on its own parameter copy only.
            ce = -(target * torch.log_softmax(out, dim=-1)).sum()
            return torch.autograd.grad(ce, current, create_graph=True, allow_unused=True)

        if self._steps_sel is None or self._lr_sel is None:
            return list(step(leaves))
        current = list(leaves)
        total: list[Tensor | None] = [None] * len(leaves)
        for k in range(int(self._steps_sel.max())):
            live = (self._steps_sel > k).to(em.dtype)
            for i, g in enumerate(step(current)):
                if g is None:
                    continue
                shape = (-1,) + (1,) * (g.ndim - 1)
                g = g * live.view(shape)
                prev = total[i]
                total[i] = g if prev is None else prev + g
                current[i] = current[i] - self._lr_sel.view(shape) * g
        return total

    def _structured_value(self, x: Tensor, target: Tensor) -> Tensor:
        """The matching value with the first layer's weight gradient never formed.

        ``h = W_1 em' + b_1``; with ``delta = dCE / dh`` the dummy gradients of the first
        layer are ``delta`` (bias) and ``delta em'^T`` (weight), so
        ``||delta em'^T - G||^2 = ||delta||^2 ||em'||^2 - 2 delta^T G em' + ||G||^2`` and
        ``<delta em'^T, G> = delta^T G em'``: one pass over the upload's ``[hidden, d]`` block
        per evaluation instead of the several the generic path makes (FedRAP's 1,204-wide
        input: docs/federated.md, ``benchmarks/dlg_speed.py``). Equal to the generic value up
        to rounding.
        """
        em = x[:, : self.input_dim]
        weight = self._params_sel["hidden.weight"].detach()
        h = torch.einsum("bhd,bd->bh", weight, em) + self._params_sel["hidden.bias"].detach()
        leaves = [self._params_sel[k].detach().requires_grad_(True) for k in self._rest]
        out = self._forward_rest(dict(zip(self._rest, leaves, strict=True)), h)
        ce = -(target * torch.log_softmax(out, dim=-1)).sum()
        grads = torch.autograd.grad(ce, [h, *leaves], create_graph=True, allow_unused=True)
        delta = grads[0]
        assert delta is not None  # h is the rest's input
        g_weight = self._observed_sel["hidden.weight"]
        g_bias = self._observed_sel["hidden.bias"]
        g_em = torch.einsum("bhd,bd->bh", g_weight, em)
        delta_sq, em_sq = delta.pow(2).sum(dim=1), em.pow(2).sum(dim=1)
        if self.distance == "cosine":
            dot = (delta * g_bias).sum(dim=1) + (delta * g_em).sum(dim=1)
            dummy_sq = delta_sq + delta_sq * em_sq
            for k, g in zip(self._rest, grads[1:], strict=True):
                if g is not None:
                    dot = dot + (g.flatten(1) * self._observed_sel[k].flatten(1)).sum(dim=1)
                    dummy_sq = dummy_sq + g.flatten(1).pow(2).sum(dim=1)
            return 1 - dot / (dummy_sq * self._observed_sq).clamp_min(1e-300).sqrt()
        value = (delta - g_bias).pow(2).sum(dim=1)
        value = value + delta_sq * em_sq - 2 * (delta * g_em).sum(dim=1) + self._weight_sq
        for k, g in zip(self._rest, grads[1:], strict=True):
            observed = self._observed_sel[k]
            diff = observed.neg() if g is None else g - observed
            value = value + diff.pow(2).flatten(1).sum(dim=1)
        return value

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(value [b], gradient [b, P])`` for the selected users' dummies ``x [b, P]``."""
        if self._rng is not None:
            _set_rng_state(self._rng, self._device)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            names = list(self._params_sel)
            leaves = [self._params_sel[k].detach().requires_grad_(True) for k in names]
            if self.hard_label is None:
                target = torch.softmax(x[:, self.input_dim :], dim=-1)
            else:
                # A fixed one-hot label: y' gets no gradient and only em' is optimised.
                target = torch.zeros_like(x[:, self.input_dim :])
                target[:, self.hard_label] = 1
            if self.structured:
                value = self._structured_value(x, target)
                (gradient,) = torch.autograd.grad(value.sum(), x)
                return value.detach(), gradient
            dummy = self._dummy_gradients(names, leaves, x[:, : self.input_dim], target)
            if self.distance == "cosine":
                dot = x.new_zeros(x.shape[0])
                dummy_sq = x.new_zeros(x.shape[0])
                observed_sq = x.new_zeros(x.shape[0])
                for k, g in zip(names, dummy, strict=True):
                    observed = self._observed_sel[k].flatten(1)
                    observed_sq = observed_sq + observed.pow(2).sum(dim=1)
                    if g is not None:
                        dot = dot + (g.flatten(1) * observed).sum(dim=1)
                        dummy_sq = dummy_sq + g.flatten(1).pow(2).sum(dim=1)
                # The tiny floor keeps an all-zero gradient finite (value 1: no match).
                norms = (dummy_sq * observed_sq).clamp_min(1e-300).sqrt()
                value = 1 - dot / norms
            else:
                value = x.new_zeros(x.shape[0])
                for k, g in zip(names, dummy, strict=True):
                    observed = self._observed_sel[k]
                    # A parameter the forward never used has a zero dummy gradient.
                    diff = observed.neg() if g is None else g - observed
                    value = value + diff.pow(2).flatten(1).sum(dim=1)
            (gradient,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), gradient


def _lbfgs_direction(
    g: Tensor,
    hist_s: Tensor,
    hist_y: Tensor,
    hist_rho: Tensor,
    hist_sy: Tensor,
    h_diag: Tensor,
    written: Tensor,
) -> Tensor:
    """``-H g`` by the L-BFGS two-loop recursion, for every user at once.

    torch's first loop (newest pair first) computes
    ``alpha_i = rho_i s_i . (-g - sum_{j newer} alpha_j y_j)``; in chronological order that is
    the unit upper-triangular system ``(I + diag(rho) triu(S^T Y, 1)) alpha = rho * S^T (-g)``.
    The second loop (oldest first) computes
    ``beta_i = rho_i y_i . (r0 + sum_{j older} (alpha_j - beta_j) s_j)`` with
    ``r0 = H_diag * (-g - Y alpha)``: the unit lower-triangular system
    ``(I + diag(rho) L) beta = rho * (Y^T r0 + L alpha)``, ``L = tril(Y^T S, -1)``. Solving
    them by substitution is the same arithmetic as the loops, in a few batched operations
    instead of ``4 * history_size`` tiny ones per iteration (the L-BFGS bookkeeping would
    otherwise cost more than the objective once few users are left).

    Each user writes its accepted pairs to slots ``0, 1, ... (mod m)`` of its own ring buffer,
    so its pairs, oldest first, are the slots ``(written - u + j) % m``; for a user with fewer
    than ``u`` pairs the first of those slots are still empty (all zero, ``rho = 0``), which
    makes them no-ops in both systems.

    Args:
        g: ``[B, P]`` gradients.
        hist_s: ``[B, m, P]`` steps ``s`` by slot (zero where unused).
        hist_y: ``[B, m, P]`` gradient changes ``y`` by slot.
        hist_rho: ``[B, m]`` ``1 / (y . s)`` by slot (0 where unused).
        hist_sy: ``[B, m, m]`` ``s_i . y_j`` by slot.
        h_diag: ``[B]`` initial inverse-Hessian scale ``y . s / y . y`` of the newest pair.
        written: ``int64[B]`` pairs each user has accepted so far.

    Returns:
        ``[B, P]`` the search direction.
    """
    num_users, slots = hist_rho.shape
    q0 = -g
    used = min(int(written.max()), slots)
    if used == 0:
        return q0 * h_diag.unsqueeze(1)
    order = (written.unsqueeze(1) - used + torch.arange(used, device=g.device)) % slots
    rho = hist_rho.gather(1, order)
    rows = hist_sy.gather(1, order.unsqueeze(2).expand(num_users, used, slots))
    sy = rows.gather(2, order.unsqueeze(1).expand(num_users, used, used))
    eye = torch.eye(used, dtype=g.dtype, device=g.device)
    sq = torch.einsum("bmp,bp->bm", hist_s, q0).gather(1, order)
    upper = eye + rho.unsqueeze(2) * sy.triu(1)
    alpha = torch.linalg.solve_triangular(
        upper, (rho * sq).unsqueeze(2), upper=True, unitriangular=True
    ).squeeze(2)
    # Back to slot order to combine with the history buffers.
    alpha_slots = hist_rho.new_zeros(num_users, slots).scatter(1, order, alpha)
    r0 = (q0 - torch.einsum("bm,bmp->bp", alpha_slots, hist_y)) * h_diag.unsqueeze(1)
    yr = torch.einsum("bmp,bp->bm", hist_y, r0).gather(1, order)
    lower_l = sy.transpose(1, 2).tril(-1)
    lower = eye + rho.unsqueeze(2) * lower_l
    rhs = rho * (yr + (lower_l @ alpha.unsqueeze(2)).squeeze(2))
    beta = torch.linalg.solve_triangular(
        lower, rhs.unsqueeze(2), upper=False, unitriangular=True
    ).squeeze(2)
    coef = hist_rho.new_zeros(num_users, slots).scatter(1, order, alpha - beta)
    return r0 + torch.einsum("bm,bmp->bp", coef, hist_s)


def _batched_lbfgs(
    objective: _MatchObjective,
    x0: Tensor,
    steps: int,
    max_iter: int,
    lr: float,
    history_size: int,
    tolerance_grad: float,
    tolerance_change: float,
    compact: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise independent per-user objectives, each with its own L-BFGS state.

    Per user this is ``torch.optim.LBFGS(lr=lr, max_iter=max_iter, history_size=history_size,
    line_search_fn=None)`` with ``step(closure)`` called ``steps`` times, as in the DLG
    reference: the same first step ``min(1, 1/|g|_1) * lr``, the same two-loop recursion and
    curvature test ``y.s > 1e-10``, and the same stopping rules. A ``step`` ends after
    ``max_iter`` iterations or when the update or the loss change falls below
    ``tolerance_change``; that pause does not change the trajectory (the next ``step`` resumes
    from the saved state), it only uses up one of the ``steps``. A user stops for good when
    ``max |grad| <= tolerance_grad``, when its direction is no longer a descent direction, or
    after ``steps`` steps. One deliberate difference: a user whose loss or gradient turns
    NaN/inf is put back on its last finite iterate and stopped, instead of carrying NaN on.
    The per-user trajectories agree with torch's to rounding error, but DLG's fixed unit steps
    are chaotic (a 1e-15 change of the start moves torch's own iterate by up to ~0.1 after
    60 iterations), so after many iterations only the statistics agree, not every user.

    Users share nothing but the tensors they are stored in: all per-user quantities (step
    sizes, curvature pairs, ``H_diag``, stopping) are computed row by row, so a user's result
    does not depend on which other users are attacked with it (up to floating-point rounding
    and, for a stochastic head, the noise draws).

    With ``compact`` (the default) users that have finished are dropped from the batch once
    they are a quarter of it; without, every evaluation keeps all rows (slower, but each row's
    noise draws stay the same, which ``fixed_noise`` needs).

    Returns:
        ``(x [B, P], loss [B], iterations int64[B])``.
    """
    num_users, dim = x0.shape
    # torch also ends a step once `max_eval = max_iter * 5 // 4` closure calls are spent (one
    # per iteration plus the step's first); that binds only for max_iter 2 and 3.
    per_step = min(max_iter, max(1, max_iter * 5 // 4 - 1))
    device, dtype = x0.device, x0.dtype
    x_out = x0.clone()
    loss_out = torch.full((num_users,), math.nan, dtype=dtype, device=device)
    iters_out = torch.zeros(num_users, dtype=torch.long, device=device)

    # Working set: users still being optimised (rows of every state tensor below).
    index = torch.arange(num_users, device=device)
    objective.select(index)
    x = x0.clone()
    loss, g = objective(x)
    active = torch.isfinite(loss) & torch.isfinite(g).all(dim=1)
    # A user whose very first evaluation is non-finite keeps its initial dummies.
    loss = torch.where(active, loss, torch.full_like(loss, math.nan))
    g = torch.where(active.unsqueeze(1), g, torch.zeros_like(g))
    active &= g.abs().amax(dim=1) > tolerance_grad

    d = torch.zeros_like(x)
    t = torch.zeros(num_users, dtype=dtype, device=device)
    prev_g = torch.zeros_like(x)
    h_diag = torch.ones(num_users, dtype=dtype, device=device)
    # Each user's last `history_size` accepted curvature pairs, in its own ring buffer: its
    # k-th accepted pair goes to slot k % history_size (see _lbfgs_direction).
    hist_s = torch.zeros(num_users, history_size, dim, dtype=dtype, device=device)
    hist_y = torch.zeros_like(hist_s)
    hist_rho = torch.zeros(num_users, history_size, dtype=dtype, device=device)
    # hist_sy[b, i, j] = s_i . y_j of user b, by slot, kept up to date as pairs arrive.
    hist_sy = torch.zeros(num_users, history_size, history_size, dtype=dtype, device=device)
    written = torch.zeros(num_users, dtype=torch.long, device=device)
    steps_done = torch.zeros(num_users, dtype=torch.long, device=device)
    in_step = torch.zeros(num_users, dtype=torch.long, device=device)
    iters = torch.zeros(num_users, dtype=torch.long, device=device)
    first = True

    def flush(rows: Tensor) -> None:
        users = index[rows]
        x_out[users] = x[rows]
        loss_out[users] = loss[rows]
        iters_out[users] = iters[rows]

    while True:
        if not bool(active.any()):
            flush(torch.arange(index.numel(), device=device))
            break
        # Drop finished users once they are a quarter of the working set: fewer rows to
        # evaluate, without re-slicing (and copying the history) on every single finish.
        if compact and int(active.sum()) <= 3 * index.numel() // 4:
            flush((~active).nonzero().squeeze(1))
            keep = active.nonzero().squeeze(1)
            index = index[keep]
            x, loss, g, d, t, prev_g, h_diag = (v[keep] for v in (x, loss, g, d, t, prev_g, h_diag))
            hist_s, hist_y, hist_rho, hist_sy = (
                v[keep] for v in (hist_s, hist_y, hist_rho, hist_sy)
            )
            written = written[keep]
            steps_done, in_step, iters = steps_done[keep], in_step[keep], iters[keep]
            active = active[keep]
            objective.select(index)

        if first:
            d = -g
            # torch's cautious first step: at most a unit step in L1.
            t = torch.clamp(1.0 / g.abs().sum(dim=1), max=1.0) * lr
            first = False
        else:
            y_vec = g - prev_g
            s_vec = d * t.unsqueeze(1)
            ys = (y_vec * s_vec).sum(dim=1)
            # torch keeps a pair only if it shows positive curvature.
            accept = active & (ys > 1e-10)
            if bool(accept.any()):
                rows = accept.nonzero().squeeze(1)
                slot = written[rows] % history_size
                s_new, y_new = s_vec[rows], y_vec[rows]
                hist_s[rows, slot] = s_new
                hist_y[rows, slot] = y_new
                hist_rho[rows, slot] = 1.0 / ys[rows]
                # The new slot's row and column of S^T Y.
                hist_sy[rows, slot, :] = torch.einsum("bp,bmp->bm", s_new, hist_y[rows])
                hist_sy[rows, :, slot] = torch.einsum("bmp,bp->bm", hist_s[rows], y_new)
                h_diag[rows] = ys[rows] / (y_new * y_new).sum(dim=1)
                written[rows] += 1
            r = _lbfgs_direction(g, hist_s, hist_y, hist_rho, hist_sy, h_diag, written)
            d = torch.where(active.unsqueeze(1), r, d)
            t = torch.full_like(t, lr)

        prev_g = g
        prev_loss = loss
        # Not a descent direction any more: torch breaks here on every later step too.
        gtd = (g * d).sum(dim=1)
        active &= gtd <= -tolerance_change
        move = active.unsqueeze(1)
        step = d * t.unsqueeze(1)
        x_prev = x
        x = torch.where(move, x + step, x)
        new_loss, new_g = objective(x)
        finite = torch.isfinite(new_loss) & torch.isfinite(new_g).all(dim=1)
        diverged = active & ~finite
        # Back to the last finite iterate and stop, rather than propagate NaN.
        x = torch.where(diverged.unsqueeze(1), x_prev, x)
        ok = active & finite
        loss = torch.where(ok, new_loss, prev_loss)
        g = torch.where(ok.unsqueeze(1), new_g, prev_g)
        iters = iters + ok.long()
        in_step = in_step + active.long()
        active = ok & (g.abs().amax(dim=1) > tolerance_grad)
        pause = (
            (in_step >= per_step)
            | (step.abs().amax(dim=1) <= tolerance_change)
            | ((loss - prev_loss).abs() < tolerance_change)
        )
        ends = active & pause
        steps_done = steps_done + ends.long()
        in_step = torch.where(ends, torch.zeros_like(in_step), in_step)
        active &= steps_done < steps
    return x_out, loss_out, iters_out


def _batched_adam(
    objective: _MatchObjective, x0: Tensor, iterations: int, lr: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise independent per-user objectives by Adam, keeping each user's best iterate.

    Adam is elementwise, so one optimiser over the stacked dummies is ``B`` independent ones.
    The step size is constant (Geiping et al.'s decay by 10 at 3/8, 5/8 and 7/8 of the
    iterations stalled the matching on real uploads at the budgets an audit can afford). Each
    user's result is its iterate of lowest matching loss (what the server can see); a user
    whose loss or gradient turns NaN/inf is frozen.

    Returns:
        ``(x [B, P], loss [B], iterations int64[B])``.
    """
    num_users = x0.shape[0]
    x = x0.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    b1, b2, eps = 0.9, 0.999, 1e-8
    objective.select(torch.arange(num_users, device=x0.device))
    best_x = x0.clone()
    best_loss = torch.full((num_users,), math.inf, dtype=x0.dtype, device=x0.device)
    active = torch.ones(num_users, dtype=torch.bool, device=x0.device)
    iters = torch.zeros(num_users, dtype=torch.long, device=x0.device)
    for t in range(1, iterations + 2):
        loss, g = objective(x)
        finite = torch.isfinite(loss) & torch.isfinite(g).all(dim=1)
        active &= finite
        better = active & (loss < best_loss)
        best_x = torch.where(better.unsqueeze(1), x, best_x)
        best_loss = torch.where(better, loss, best_loss)
        if t > iterations or not bool(active.any()):
            break
        g = torch.where(active.unsqueeze(1), g, torch.zeros_like(g))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        x = torch.where(active.unsqueeze(1), x - step, x)
        iters += active.long()
    best_loss = torch.where(torch.isinf(best_loss), torch.full_like(best_loss, math.nan), best_loss)
    return best_x, best_loss, iters


def dlg_attack(
    head: nn.Module,
    params: Mapping[str, Tensor] | None,
    gradients: Mapping[str, Tensor],
    *,
    input_dim: int | None = None,
    steps: int = 300,
    max_iter: int = 20,
    lr: float = 1.0,
    history_size: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    randomness: Randomness = "different",
    fixed_noise: bool = False,
    restarts: int = 0,
    restart_tol: float = 1e-4,
    chunk_size: int | None = None,
    num_threads: int = 1,
    multi_step: MultiStep = "sum",
    local_steps: int | Tensor | None = None,
    local_lr: float | Tensor | None = None,
    distance: Distance = "l2",
    optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    label_search: bool = False,
    structured: bool | None = None,
) -> DLGResult:
    """DLG (Zhu et al. 2019) label recovery from per-user gradients of a shared head.

    Solves FedAU2's Eq. 4 for every user ``u``:
    ``(em*, y*) = argmin_{em', y'} sum_k ||d CE(h(em'), softmax(y')) / d w_k - grad_u w_k||^2``
    with ``em' ~ N(0, 1)`` (the head's input dim) and ``y' ~ N(0, 1)`` (one logit per class) as
    the starting point, ``w`` the head's parameters at the user's upload, and reports
    ``argmax y*``. By Thm 1 the optimal dummy label is ``y*_i = p'_i - delta_i`` with
    ``delta_i`` the projection of the observed last-layer gradient row on the dummy features
    (Cor. 1 for an MLP): the gradient's sign pattern, the same signal iDLG reads, decides the
    label. For a DSVAE head the client's gradient carries its own ``eps1`` and every dummy
    forward draws a fresh ``eps1'`` (Cor. 3, Eq. 12), so ``delta_i`` is scaled by the random
    ``eps1^T eps1'`` and the matching objective changes at every evaluation; that is how DSVAE
    brings DLG towards chance (FedAU2 Sec. 4.3, Fig. 4a).

    The optimiser follows the mit-han-lab reference (``torch.optim.LBFGS(lr=1)``, ``step`` called
    300 times with torch's default ``max_iter=20``), run for all users at once with one L-BFGS
    state per user; see :func:`_batched_lbfgs` for the (small) differences. One L-BFGS over the
    *sum* of the users' objectives has the same minimisers (the objectives are separable), but
    its shared curvature history and step sizes couple the users' trajectories and make it far
    slower and less accurate, so it is not used.

    Args:
        head: The adversary head, ``[1, input_dim] -> [1, num_classes]`` logits. It is run as
            it is (``train``/``eval`` mode untouched): a stochastic head (DSVAE) must sample its
            noise from torch's global RNG (``torch.randn_like``...) to work under ``vmap``.
        params: The head's parameters at each user's upload, name -> ``[num_users, *shape]``
            (or ``shape``, shared by all users); ``None`` uses the head's current parameters.
        gradients: The uploaded gradients, name -> ``[num_users, *shape]`` (or ``shape`` for a
            single user), one per parameter of the head (see :func:`gradient_from_update`).
        input_dim: Dimension of the dummy embedding; by default the ``in_features`` of the
            head's first ``nn.Linear``.
        steps: ``LBFGS.step`` calls per user (the reference's 300).
        max_iter: L-BFGS iterations per ``step`` (torch's default 20); a user gets at most
            ``steps * max_iter`` iterations and stops early once converged.
        lr: L-BFGS learning rate (fixed step, no line search, as in the reference).
        history_size: Curvature pairs kept per user (torch's default 100).
        tolerance_grad: Stop a user once ``max |d loss / d (em', y')| <=`` this.
        tolerance_change: End a ``step`` when the update or the loss change is below this.
        seed: Seeds the dummy initialisation and a stochastic head's noise (the caller's global
            RNG state is restored afterwards).
        dtype: Precision of the attack (float64 by default: L-BFGS with a fixed unit step on a
            matching loss that must approach 0 is fragile in float32).
        randomness: ``vmap`` randomness for a stochastic head: ``"different"`` (independent
            noise per user, as if each were attacked alone), ``"same"`` or ``"error"``.
        fixed_noise: If false (the reference run on a stochastic module), every evaluation of
            the matching loss draws fresh noise, so L-BFGS chases a moving target. If true, each
            user's noise is drawn once per attempt and held fixed (a stronger attacker that
            treats the noise as part of the dummy data). Only matters for a stochastic head;
            it costs more, since finished users cannot be dropped from the batch. With fresh
            noise any noise comparable to the logits stalls L-BFGS, a plain VAE head's
            ``sigma * eps2`` included; held fixed, the VAE's deterministic ``mu`` path leaks
            (Cor. 2) while DSVAE's ``eps1`` still hides the label (Cor. 3).
        restarts: Extra random starts for users whose attack did not converge, keeping each
            user's lowest matching loss. Not in the reference (0 reproduces it); the server
            needs no label to decide, only its own loss. DLG fails mostly by a bad start (the
            dummy label and the head's prediction saturate on the same class and the dummy
            gradient vanishes), so a few restarts raise the accuracy substantially.
        restart_tol: A user counts as converged once its loss is at most ``restart_tol`` times
            the squared norm of its uploaded gradient.
        chunk_size: Attack at most this many users at a time (bounds memory); ``None`` = all.
        num_threads: CPU threads while attacking (restored afterwards); the tensors are tiny,
            so one thread is fastest, as for :class:`~lit_unlearn.attacks.MLPAttacker`.
        multi_step: How an upload made of several local SGD steps is matched (a client that
            trains the head for ``K`` minibatches uploads the *sum* of ``K`` gradients, taken
            at moving parameters and, in a recommender, a moving embedding).
            ``"sum"`` (the reference): the upload is matched as one gradient, as if ``K = 1``;
            with ``K > 1`` the summed last-layer bias gradient can exceed what one soft label
            can produce (``|p - y| <= 1`` per class) and the matching drifts to wrong labels.
            ``"mean"``: the upload is divided by ``K`` first (the mean step's gradient).
            ``"unroll"``: the dummy pair is run through ``K`` plain SGD steps of the head at
            ``local_lr`` from the start parameters, and the sum of those steps' gradients is
            matched (multi-step inversion, Geiping et al. 2020, Sec. 5); it costs ``K`` times
            more per evaluation. Both need ``local_steps``; the server knows ``K`` from the
            protocol's local batch size and each client's interaction count (FedAvg's weight).
        local_steps: ``K``, the local SGD steps behind each upload: an int (all users) or
            ``int[num_users]``; values below 1 are treated as 1. Needed by ``"mean"`` and
            ``"unroll"``.
        local_lr: The client's learning rate of the head, a float or ``[num_users]``; needed
            by ``"unroll"``.
        distance: ``"l2"`` (the reference, Eq. 4: squared Euclidean distance summed over the
            parameters) or ``"cosine"`` (``1 - cos`` of the flattened dummy and observed
            gradients, Geiping et al. 2020): blind to the gradient's scale, so a dummy whose
            magnitude cannot match the upload's can still match its direction. The loss
            reported, and ``restart_tol``, are then in cosine units.
        structured: Form the first layer's dummy gradient analytically (``delta em'^T``,
            never materialised; see ``_MatchObjective._structured_value``) for a head that is
            ``from_hidden(hidden(x))`` with an ``nn.Linear`` ``hidden`` (FedAU2's heads): the
            same value up to rounding, 5x faster on a 1,204-wide input (``benchmarks/
            dlg_speed.py``). ``None``: when
            the head allows it and ``multi_step`` is not ``"unroll"``; ``False``: the generic
            path; ``True``: required (an error when the head does not allow it).

    Returns:
        A :class:`DLGResult`, one row per user, on the gradients' device.

    Raises:
        ValueError: Gradient/parameter names that are not the head's parameters, shape
            mismatches, NaN/inf gradients or parameters, no users, a head with fewer than two
            outputs, or invalid optimiser settings.
    """
    _int_at_least("steps", steps, 1)
    _int_at_least("max_iter", max_iter, 1)
    _int_at_least("history_size", history_size, 1)
    _int_at_least("num_threads", num_threads, 1)
    _int_at_least("restarts", restarts, 0)
    if chunk_size is not None:
        _int_at_least("chunk_size", chunk_size, 1)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not (tolerance_grad >= 0 and tolerance_change >= 0 and restart_tol >= 0):
        raise ValueError("tolerance_grad, tolerance_change and restart_tol must be >= 0")
    if randomness not in ("error", "different", "same"):
        raise ValueError(f"randomness must be 'error', 'different' or 'same', got {randomness!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if multi_step not in ("sum", "mean", "unroll"):
        raise ValueError(f"multi_step must be 'sum', 'mean' or 'unroll', got {multi_step!r}")
    if distance not in ("l2", "cosine"):
        raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
    if multi_step != "sum" and local_steps is None:
        raise ValueError(f"multi_step={multi_step!r} needs local_steps (K per user)")
    if multi_step == "unroll" and local_lr is None:
        raise ValueError("multi_step='unroll' needs local_lr (the client's learning rate)")

    reference = {k: v.detach() for k, v in head.named_parameters()}
    if not reference:
        raise ValueError(f"{type(head).__name__} has no parameters to take gradients of")
    if not gradients:
        raise ValueError("gradients is empty: nothing was uploaded to attack")
    _check_keys("gradients", gradients, reference)
    grad_dims, num_users = _batch_dims("gradients", gradients, reference)
    if params is None:
        params = reference
    _check_keys("params", params, reference)
    param_dims, param_users = _batch_dims("params", params, reference)
    if num_users is None:
        # Unbatched gradients: a single user.
        num_users = 1
    elif any(dim is None for dim in grad_dims.values()):
        shared = sorted(k for k, dim in grad_dims.items() if dim is None)
        raise ValueError(
            f"gradients {shared} have the parameter's shape while the others are per-user "
            f"[{num_users}, ...]: pass every gradient per user (or all for a single user)"
        )
    if param_users is not None and param_users != num_users:
        raise ValueError(f"params hold {param_users} users but gradients {num_users}")
    if num_users == 0:
        raise ValueError("gradients hold no users")
    _check_finite("gradients", gradients)
    _check_finite("params", params)

    device = next(iter(gradients.values())).device
    observed = {
        k: (v if grad_dims[k] == 0 else v.unsqueeze(0).expand(num_users, *v.shape))
        .detach()
        .to(device=device, dtype=dtype)
        for k, v in gradients.items()
    }
    at_upload = {k: v.detach().to(device=device, dtype=dtype) for k, v in params.items()}
    dim = _input_dim(head) if input_dim is None else input_dim
    _int_at_least("input_dim", dim, 1)
    steps_per_user: Tensor | None = None
    lr_per_user: Tensor | None = None
    if multi_step != "sum":
        steps_per_user = _per_user("local_steps", local_steps, num_users, device, torch.long)
        steps_per_user = steps_per_user.clamp_min(1)
        if multi_step == "mean":
            k_users = steps_per_user.to(dtype)
            observed = {
                k: v / k_users.view((-1,) + (1,) * (v.ndim - 1)) for k, v in observed.items()
            }
            steps_per_user = None
        else:
            lr_per_user = _per_user("local_lr", local_lr, num_users, device, dtype)
            if not bool((lr_per_user > 0).all() & torch.isfinite(lr_per_user).all()):
                raise ValueError("local_lr must be finite and > 0")

    with (
        _torch_threads(num_threads),
        _seeded_global_rng(seed, device),
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        # The head in the attack's dtype on a copy, so the caller's module is left untouched.
        work_head = _head_copy(head, dtype, device)
        num_classes = _num_outputs(work_head, at_upload, param_dims, dim, device, dtype)
        possible = multi_step != "unroll" and _structured_head(work_head, dim, set(at_upload))
        if structured and not possible:
            raise ValueError(
                "structured=True needs a head that is from_hidden(hidden(x)) with an nn.Linear "
                f"`hidden` of input {dim} and bias, and multi_step other than 'unroll'"
            )
        use_structured = possible if structured is None else bool(structured)
        generator = torch.Generator()
        width = dim + num_classes

        def draw() -> Tensor:
            # On the CPU for every user, so the starting points depend on the seed alone (not
            # on the device, the chunking, or which users a restart retries).
            return torch.randn(num_users, width, generator=generator, dtype=dtype).to(device)

        def attack(rows: Tensor, start: Tensor, hard: int | None) -> tuple[Tensor, Tensor, Tensor]:
            size = rows.numel() if chunk_size is None else chunk_size
            parts: list[tuple[Tensor, Tensor, Tensor]] = []
            for first in range(0, rows.numel(), size):
                chunk = rows[first : first + size]
                objective = _MatchObjective(
                    work_head,
                    {
                        k: v if param_dims[k] is None else v.index_select(0, chunk)
                        for k, v in at_upload.items()
                    },
                    param_dims,
                    {k: v.index_select(0, chunk) for k, v in observed.items()},
                    dim,
                    randomness,
                    fixed_noise,
                    None if steps_per_user is None else steps_per_user.index_select(0, chunk),
                    None if lr_per_user is None else lr_per_user.index_select(0, chunk),
                    distance,
                    hard,
                    use_structured,
                )
                if optimizer == "adam":
                    parts.append(
                        _batched_adam(objective, start[first : first + size], steps * max_iter, lr)
                    )
                    continue
                parts.append(
                    _batched_lbfgs(
                        objective,
                        start[first : first + size],
                        steps,
                        max_iter,
                        lr,
                        history_size,
                        tolerance_grad,
                        tolerance_change,
                        compact=not fixed_noise,
                    )
                )
            return (
                torch.cat([part[0] for part in parts]),
                torch.cat([part[1] for part in parts]),
                torch.cat([part[2] for part in parts]),
            )

        everyone = torch.arange(num_users, device=device)
        # What "converged" means per user: a mismatch small next to the upload itself.
        scale = torch.stack([v.pow(2).flatten(1).sum(dim=1) for v in observed.values()]).sum(0)
        if distance == "cosine":
            scale = torch.ones_like(scale)

        def with_restarts(hard: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            # The same starting points for every label tried.
            generator.manual_seed(seed)
            x, loss, iterations = attack(everyone, draw(), hard)
            attempts = torch.ones(num_users, dtype=torch.long, device=device)
            for _ in range(restarts):
                start = draw()
                retry = (~(loss <= restart_tol * scale)).nonzero().squeeze(1)
                if retry.numel() == 0:
                    break
                x_new, loss_new, iters_new = attack(retry, start.index_select(0, retry), hard)
                # The server can compare matching losses without knowing any label. (A NaN
                # loss only survives when every attempt of the user gave NaN.)
                old = loss.index_select(0, retry)
                better = (loss_new < old) | (torch.isnan(old) & ~torch.isnan(loss_new))
                won = retry[better]
                x[won] = x_new[better]
                loss[won] = loss_new[better]
                iterations[retry] += iters_new
                attempts[retry] += 1
            return x, loss, iterations, attempts

        if not label_search:
            x, loss, iterations, attempts = with_restarts(None)
            y_logits = x[:, dim:]
            labels = y_logits.argmax(dim=1)
            label_probs = torch.softmax(y_logits, dim=1)
        else:
            runs = [with_restarts(c) for c in range(num_classes)]
            losses = torch.stack([run[1] for run in runs], dim=1)
            # A NaN loss (every attempt diverged) never wins.
            labels = torch.nan_to_num(losses, nan=math.inf).argmin(dim=1)
            pick = labels.view(1, -1, 1)
            x = torch.stack([run[0] for run in runs]).gather(0, pick.expand(1, num_users, width))[0]
            loss = losses.gather(1, labels.unsqueeze(1)).squeeze(1)
            iterations = torch.stack([run[2] for run in runs]).sum(dim=0)
            attempts = torch.stack([run[3] for run in runs]).sum(dim=0)
            label_probs = torch.nn.functional.one_hot(labels, num_classes).to(dtype)
    return DLGResult(
        labels=labels,
        label_probs=label_probs,
        embeddings=x[:, :dim],
        loss=loss,
        iterations=iterations,
        attempts=attempts,
    )


def _per_user(
    name: str,
    value: float | Tensor | None,
    num_users: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """A scalar or ``[num_users]`` option as a ``[num_users]`` tensor."""
    if value is None:
        raise ValueError(f"{name} is required")
    t = torch.as_tensor(value).detach()
    if t.ndim == 0:
        t = t.expand(num_users)
    if tuple(t.shape) != (num_users,):
        raise ValueError(f"{name} must be a scalar or [{num_users}], got shape {tuple(t.shape)}")
    if dtype == torch.long and t.is_floating_point() and not bool((t == t.round()).all()):
        raise ValueError(f"{name} must hold whole numbers")
    return t.to(device=device, dtype=dtype)


def _head_copy(head: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    work = copy.deepcopy(head)
    return work.to(device=device, dtype=dtype)


def _num_outputs(
    head: nn.Module,
    params: dict[str, Tensor],
    param_dims: dict[str, int | None],
    input_dim: int,
    device: torch.device,
    dtype: torch.dtype,
) -> int:
    first = {k: v if param_dims[k] is None else v[0] for k, v in params.items()}
    probe = torch.zeros(1, input_dim, device=device, dtype=dtype)
    try:
        with torch.no_grad():
            out = functional_call(head, first, (probe,))
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"the head does not accept a [1, {input_dim}] input ({err}); pass input_dim"
        ) from err
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"the head must return [1, num_classes] logits, got {tuple(out.shape)}")
    if out.shape[1] < 2:
        raise ValueError(f"num_classes must be >= 2, the head returns {out.shape[1]} logit(s)")
    return int(out.shape[1])


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRecoveryResult:
    """How well a gradient attack recovered the users' labels.

    FedAU2's "gradient unlearning" metric is :attr:`accuracy` (Sec. 5.1, Fig. 4a); the
    baselines say what it means: a defence works when the attack is no better than guessing.

    Attributes:
        attack: Attack name (``dlg``, ``idlg``).
        num_classes: Classes of the attribute.
        n_users: Users scored.
        n_undetermined: Users the attack returned :data:`UNDETERMINED` for (counted wrong).
        accuracy: Fraction of users whose label was recovered.
        balanced_accuracy: Mean per-class recall over the classes present in the true labels.
        chance: ``1 / num_classes``, the (balanced) accuracy of uniform guessing.
        majority_class: The class of the majority baseline.
        majority_accuracy: Accuracy of always answering :attr:`majority_class`.
        majority_balanced_accuracy: Its balanced accuracy (``1 / #classes present``).
    """

    attack: str
    num_classes: int
    n_users: int
    n_undetermined: int
    accuracy: float
    balanced_accuracy: float
    chance: float
    majority_class: int
    majority_accuracy: float
    majority_balanced_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (JSON/CSV friendly)."""
        return asdict(self)


def _codes(values: npt.ArrayLike | Tensor, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0)):
        raise ValueError(f"{name} must hold integer class codes")
    return arr.astype(np.int64)


def evaluate_label_recovery(
    recovered: npt.ArrayLike | Tensor,
    labels: npt.ArrayLike | Tensor,
    num_classes: int,
    *,
    attack: str = "dlg",
    majority: int | None = None,
) -> LabelRecoveryResult:
    """Score recovered labels against the users' true labels, with the baselines.

    Args:
        recovered: ``[n]`` recovered codes in ``[0, num_classes)`` or :data:`UNDETERMINED`.
        labels: ``[n]`` true codes in ``[0, num_classes)`` (drop unknown users first).
        num_classes: Classes of the attribute (>= 2).
        attack: Name stored in the result.
        majority: Class of the majority baseline; by default the most frequent true label
            (smallest code on ties), the best a label-blind constant guess can do. Pass the
            majority of the users the server knows (FedAU2's 20%) for a realistic baseline.

    Returns:
        A :class:`LabelRecoveryResult`.

    Raises:
        ValueError: ``num_classes < 2``, no users, different lengths or codes out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    pred = _codes(recovered, "recovered")
    true = _codes(labels, "labels")
    if pred.shape != true.shape:
        raise ValueError(f"recovered {pred.shape} and labels {true.shape} differ in length")
    if true.size == 0:
        raise ValueError("cannot score an empty set of users")
    if true.min() < 0 or true.max() >= num_classes:
        raise ValueError(f"labels must be codes in [0, {num_classes}) (drop unknown users first)")
    if pred.min() < UNDETERMINED or pred.max() >= num_classes:
        raise ValueError(f"recovered must be codes in [0, {num_classes}) or {UNDETERMINED}")
    if majority is None:
        majority = majority_class(true)
    elif not 0 <= majority < num_classes:
        raise ValueError(f"majority must be in [0, {num_classes}), got {majority}")
    undetermined = pred == UNDETERMINED
    # An undetermined user is a miss: map it to a code no true label has.
    scored = np.where(undetermined, num_classes, pred)
    maj_acc, maj_bacc = majority_baseline(true, majority)
    return LabelRecoveryResult(
        attack=attack,
        num_classes=num_classes,
        n_users=int(true.size),
        n_undetermined=int(undetermined.sum()),
        accuracy=accuracy(true, scored),
        balanced_accuracy=balanced_accuracy(true, scored),
        chance=chance_level(num_classes),
        majority_class=int(majority),
        majority_accuracy=maj_acc,
        majority_balanced_accuracy=maj_bacc,
    )
