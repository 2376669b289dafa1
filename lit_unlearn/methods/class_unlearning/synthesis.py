"""Synthesising class-conditional inputs from a trained classifier (DSDA stage 1, paper 004).

The classifier defines an energy per class (Eq. 1), E(x, y) = -log softmax(M(x))[y], whose
negative gradient is the score s(x, y) = grad_x log p(y | x). Samples of every class are drawn
by Langevin dynamics on that energy, all classes at once in one batch:

* **EGDS** (Eq. 3, Algorithm 1 lines 4-5), SGLD:
  ``x <- x + alpha s(x, y) + sqrt(2 alpha) eps``;
* **AEGDS** (Eq. 4-6, Algorithm 1 lines 7-13): a Heun predictor-corrector with heavy-ball
  momentum over a coarser time grid (``skip`` SGLD steps per step, so ``steps / skip``
  updates, each with two score evaluations)::

      eps ~ N(0, I);  d = s(x, y)
      x'  = x + eta dt d + sqrt(2 alpha) dt eps          (predictor; Alg. 1 line 9 has eta = 1)
      d'  = s(x', y)
      v^  = (1 - 1/(2 eta)) d + 1/(2 eta) d'              (eta = 1: the Heun average)
      v   = gamma v + alpha v^                             (Eq. 6, heavy ball)
      x   = x + dt v + sqrt(2 alpha) dt eps                (the same eps, Alg. 1 line 13)

  The paper's Algorithm 1 and Eq. 5 disagree on the scaling (the predictor's drift has no
  alpha, the noise is sqrt(2 alpha) dt, neither equals an SGLD-consistent sqrt(2 alpha dt));
  ``mode="paper"`` implements Algorithm 1 literally (the default, spec decision 1) and
  ``mode="consistent"`` the SGLD-scaled version: ``x' = x + alpha dt d + sqrt(2 alpha dt) eps``
  and ``x = x + dt v + sqrt(2 alpha dt) eps``.

Decisions the paper leaves open (``../shared/specs/dsda.md`` section 7.4): x_0 ~ N(0, I) in the
normalised input space; the model in eval mode (batch-norm running statistics) and frozen;
after every step (and the predictor) each channel is clamped to the normalised image of [0, 1];
a ``noise_scale`` multiplier on every noise term (JEM-style practice uses ~0.01). Score
evaluations are counted per sample, so EGDS and AEGDS can be compared at equal cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["LangevinSampler", "SynthesisResult", "class_score"]

Mode = Literal["paper", "consistent"]


def class_score(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """s(x, y) = grad_x log softmax(model(x))[y] per sample, and log p(y | x).

    Args:
        model: Normalised inputs ``[B, C, H, W]`` to logits ``[B, K]``.
        x: Inputs (no grad needed).
        y: Class of each sample ``[B]``.

    Returns:
        ``(score [B, C, H, W], log_prob [B])``, both detached. Samples are independent (the
        model is in eval mode), so the gradient of the summed log-probabilities is each
        sample's own score.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logp = torch.log_softmax(model(x), dim=1).gather(1, y[:, None]).squeeze(1)
        (score,) = torch.autograd.grad(logp.sum(), x)
    return score.detach(), logp.detach()


@dataclass(frozen=True)
class SynthesisResult:
    """Samples drawn by :class:`LangevinSampler`.

    Attributes:
        images: Normalised inputs ``[N, C, H, W]`` (within the clamp bounds).
        labels: Class of every sample ``[N]``.
        log_prob: log p(y | x) of the final samples under the model ``[N]``.
        score_evals: Score evaluations per sample (EGDS: ``steps``; AEGDS: 2 per update).
        seconds: Wall time of the synthesis.
    """

    images: Tensor
    labels: Tensor
    log_prob: Tensor
    score_evals: int
    seconds: float


class LangevinSampler:
    """EGDS (SGLD) or AEGDS (Algorithm 1) on the classifier's class energies.

    Args:
        method: ``egds`` or ``aegds``.
        steps: SGLD steps N (EGDS); AEGDS runs ``steps // skip`` updates with dt = ``skip``.
        step_size: alpha (constant over the grid).
        skip: AEGDS time-step skip factor k (uniform grid, dt = k).
        momentum: gamma of Eq. 6.
        eta: Heun weight of Eq. 5 (1: Algorithm 1).
        mode: ``paper`` (Algorithm 1 literally) or ``consistent`` (SGLD-scaled noise and drift).
        noise_scale: Multiplier of every noise term (1: the equations as written).
        nesterov: Evaluate the predictor at the look-ahead x + dt gamma v (the paper calls
            Eq. 6 "Nesterov" but writes heavy-ball; off = Eq. 6 literally).

    Raises:
        ValueError: On invalid hyperparameters.
    """

    def __init__(
        self,
        method: Literal["egds", "aegds"] = "aegds",
        steps: int = 100,
        step_size: float = 1.0,
        skip: int = 5,
        momentum: float = 0.9,
        eta: float = 1.0,
        mode: Mode = "paper",
        noise_scale: float = 0.01,
        nesterov: bool = False,
    ) -> None:
        if method not in ("egds", "aegds"):
            raise ValueError(f"method must be 'egds' or 'aegds', got {method!r}")
        if mode not in ("paper", "consistent"):
            raise ValueError(f"mode must be 'paper' or 'consistent', got {mode!r}")
        if steps < 1 or skip < 1 or (method == "aegds" and steps < skip):
            raise ValueError(
                f"need steps >= 1, skip >= 1 and (AEGDS) steps >= skip; got {steps}, {skip}"
            )
        if not (step_size > 0 and 0 <= momentum < 1 and eta > 0 and noise_scale >= 0):
            raise ValueError(
                "need step_size > 0, 0 <= momentum < 1, eta > 0, noise_scale >= 0; got "
                f"{step_size}, {momentum}, {eta}, {noise_scale}"
            )
        self.method = method
        self.steps = steps
        self.step_size = step_size
        self.skip = skip
        self.momentum = momentum
        self.eta = eta
        self.mode: Mode = mode
        self.noise_scale = noise_scale
        self.nesterov = nesterov

    @property
    def evals_per_sample(self) -> int:
        """Score evaluations each sample costs."""
        return self.steps if self.method == "egds" else 2 * (self.steps // self.skip)

    def sample(
        self,
        model: nn.Module,
        labels: Tensor,
        shape: Sequence[int],
        bounds: tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
    ) -> SynthesisResult:
        """Draw one sample per entry of ``labels``, all in one batch.

        Args:
            model: Normalised inputs to logits (put in eval mode here, restored afterwards;
                its parameters receive no gradient).
            labels: Target class of every sample ``[N]``.
            shape: ``(C, H, W)`` of one input.
            bounds: Per-channel ``(lo, hi)`` of the valid normalised range (``[C]`` each);
                None: unclamped.
            generator: Seeds x_0 and every noise draw (on the labels' device).
            x0: Starting points instead of N(0, I) draws.
        """
        start = time.perf_counter()
        device = labels.device
        n = int(labels.shape[0])
        full = (n, *(int(s) for s in shape))
        x = torch.randn(full, generator=generator, device=device) if x0 is None else x0.clone()
        lo = hi = None
        if bounds is not None:
            lo = bounds[0].to(device).view(1, -1, 1, 1)
            hi = bounds[1].to(device).view(1, -1, 1, 1)

        def clamp(z: Tensor) -> Tensor:
            return z if lo is None or hi is None else torch.maximum(torch.minimum(z, hi), lo)

        x = clamp(x)
        was_training = model.training
        requires = [p.requires_grad for p in model.parameters()]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # the model is fixed: only grad_x is needed
        try:
            if self.method == "egds":
                x = self._egds(model, x, labels, clamp, generator)
            else:
                x = self._aegds(model, x, labels, clamp, generator)
            _, logp = class_score(model, x, labels)
        finally:
            model.train(was_training)
            for p, r in zip(model.parameters(), requires, strict=True):
                p.requires_grad_(r)
        return SynthesisResult(
            images=x.detach(),
            labels=labels.clone(),
            log_prob=logp,
            score_evals=self.evals_per_sample,
            seconds=time.perf_counter() - start,
        )

    def _noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def _egds(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        clamp: Callable[[Tensor], Tensor],
        generator: torch.Generator | None,
    ) -> Tensor:
        a = self.step_size
        for _ in range(self.steps):
            score, _ = class_score(model, x, y)
            x = clamp(
                x + a * score + self.noise_scale * math.sqrt(2 * a) * self._noise(x, generator)
            )
        return x

    def _aegds(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        clamp: Callable[[Tensor], Tensor],
        generator: torch.Generator | None,
    ) -> Tensor:
        a, dt, eta, gamma = self.step_size, float(self.skip), self.eta, self.momentum
        if self.mode == "paper":  # Algorithm 1: drift dt (eta dt, Eq. 5), noise sqrt(2a) dt
            drift, noise = eta * dt, self.noise_scale * math.sqrt(2 * a) * dt
        else:  # SGLD-consistent: drift a dt, noise sqrt(2 a dt)
            drift, noise = a * dt, self.noise_scale * math.sqrt(2 * a * dt)
        v = torch.zeros_like(x)
        for _ in range(self.steps // self.skip):
            eps = self._noise(x, generator)  # one draw for predictor and update (Alg. 1 l. 7)
            at = clamp(x + dt * gamma * v) if self.nesterov else x
            d, _ = class_score(model, at, y)
            x_pred = clamp(at + drift * d + noise * eps)
            d_pred, _ = class_score(model, x_pred, y)
            v_hat = (1 - 1 / (2 * eta)) * d + (1 / (2 * eta)) * d_pred
            v = gamma * v + a * v_hat
            x = clamp(x + dt * v + noise * eps)
        return x
