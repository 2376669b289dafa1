"""A shared attribute classifier on the client's user representation, and what the server
records of it.

:class:`AdversaryTerm` adds ``weight * CE(h(GRL(em_u)), y_u)`` to a client's local objective
(FedAU2 Eq. 5): ``h`` is a 2-layer MLP (hidden 100) shared and aggregated like the item side.
``grl_scale`` is the gradient-reversal factor epsilon: the forward is the identity, the backward
multiplies the gradient reaching ``em_u`` by ``-epsilon`` (Ganin & Lempitsky 2015; FedAU2:
epsilon = 400). ``grl_scale = 0`` makes ``h`` a pure observer trained on the attribute (no
gradient reaches the representation): the plain "Original + adversary head" whose uploads the
gradient-inversion attack reads. FedAU2's strategies (Global, Pretrain, the selective trigger
SUT) are options of the term; its heads (MLP, VAE, DSVAE) live in :mod:`.heads`.

:class:`UploadRecorder` is the honest-but-curious server: it keeps each client's latest upload
of the head, with the global head it was computed from (FedAU2 App. A.2).
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lit_unlearn.methods.federated.engine import ClientUpdate
from lit_unlearn.methods.federated.heads import AttributeHead, HeadNoise, build_head
from lit_unlearn.methods.federated.objectives import ClientTerm, LocalLoss
from lit_unlearn.models.base import Recommender
from lit_unlearn.models.fedrap import FedRAP

__all__ = [
    "AdversaryTerm",
    "AttributeHead",
    "UploadRecorder",
    "gradient_reversal",
    "normalized_reversal",
]


class _Reversal(torch.autograd.Function):
    """Identity forward; backward ``-scale * g``, or ``-scale * g / ||g||`` when normalised."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, scale: float, normalize: bool) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float, bool], output: Tensor) -> None:
        ctx.scale, ctx.normalize = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.normalize:
            grad = grad / grad.norm().clamp_min(torch.finfo(grad.dtype).tiny)
        return -ctx.scale * grad, None, None


def gradient_reversal(x: Tensor, scale: float) -> Tensor:
    """GRL(x): identity forward, gradient times ``-scale`` backward (0: no gradient at all)."""
    if scale == 0:
        return x.detach()
    return cast(Tensor, _Reversal.apply(x, scale, False))


def normalized_reversal(x: Tensor, tau: float) -> Tensor:
    """FedAU2's adaptive trigger (Eq. 6): the reversed gradient has norm ``tau``."""
    return cast(Tensor, _Reversal.apply(x, tau, True))


Trigger = Literal["always", "correct", "adaptive"]
Push = Literal["reverse", "confuse"]
Representation = Literal["default", "residual_mean_dims", "residual_mean_items"]


class AdversaryTerm(ClientTerm):
    """``weight * CE(h(GRL(em_u; eps_u)), y_u)`` on the client's own representation and label.

    FedAU2 Eq. 5, with the strategies of Sec. 4.2 / Fig. 3:

    * ``trigger="always"`` (Global): ``eps_u = grl_scale`` for every client, every round.
    * ``pretrain_rounds = N`` (Pretrain): for the first ``N`` rounds nothing is reversed
      (``eps_u = 0``: the head learns the attribute as an observer), then the trigger applies
      (FedAU2 Sec. 5.2: 10 / 50 / 100 rounds for FedRAP / FedVAE / FedNCF).
    * ``trigger="correct"`` (SUT, the binary selective unlearning trigger): the head's own
      prediction ``y_hat_u = argmax h(em_u)`` (the same, possibly stochastic, forward) decides;
      a client the head gets right is unlearned (``eps_u = grl_scale``), a client it gets wrong
      is skipped. ``sut_skip="loss"`` drops its whole adversarial term (head and reversal; spec
      decision 1, the paper's "adversarial training is skipped" and its lower backward time),
      ``sut_skip="grl"`` keeps training the head on it and only stops the reversal.
    * ``trigger="adaptive"`` (Eq. 6, the full SUT rule the paper defines but does not use):
      ``eps_u = tau / ||grad_{em_u} L||``, i.e. the reversed gradient reaching ``em_u`` has
      norm ``tau`` for every client.

    The head (:mod:`.heads`: ``mlp``, ``vae`` or ``dsvae``) is shared: uploaded and aggregated
    like the item side. A client whose label is unknown (``-1``) adds nothing (documented skip:
    it cannot train the adversary).

    Args:
        head: The adversary; default built from ``head_kind`` and the sizes below.
        input_dim: Representation width (when ``head`` is None).
        num_classes: Attribute classes (when ``head`` is None).
        weight: lambda of Eq. 5 (unstated in the paper; spec decision 2: 1).
        grl_scale: epsilon of the gradient reversal (0: observer, FedAU2: 400).
        lr: The head's own client learning rate (FedAU2: 0.1 FedNCF / 0.001 FedVAE / 0.1
            FedRAP); None: the clients' optimiser and lr.
        optimizer: The head's own optimiser when ``lr`` is set (``sgd``: its uploads are the
            summed local gradients, FedAU2's threat model).
        trigger: ``always`` (Global), ``correct`` (SUT) or ``adaptive`` (Eq. 6).
        pretrain_rounds: Rounds before any reversal (Pretrain); 0: reverse from the start.
        sut_skip: What SUT skips for a mis-predicted client: ``loss`` or ``grl``.
        tau: The adaptive trigger's reversed-gradient norm (Eq. 6).
        head_kind: ``mlp``, ``vae`` or ``dsvae`` (when ``head`` is None; FedAU2 = ``dsvae``).
        noise_variance: DSVAE's lambda (variance of ``eps1``; FedAU2: 4).
        noise_site: Where DSVAE's ``eps1`` sits: ``logits`` (Eq. 10) or ``input`` (Cor. 3).
        hidden: The head's hidden width (FedAU2: 100).
        reverse_through: Which logits the reversal differentiates: ``noisy`` (the head's
            own stochastic forward, as the paper) or ``mean`` (the noise-free ``mu`` of a
            VAE / DSVAE head, while the head itself still trains, and uploads, through its
            noise). DSVAE's ``eps1`` flips the sign of the reversed gradient for 31% of the
            draws at lambda = 4, which weakens the removal; ``mean`` keeps the gradient-side
            protection (the uploads are unchanged) and reverses at full strength.
        push: How the representation is pushed: ``reverse`` (FedAU2: the gradient reversal
            of the head's cross-entropy on the client's label) or ``confuse`` (not in the
            paper: the representation descends the cross-entropy between the frozen head's
            posterior and ``confusion_target``, scaled by ``grl_scale``; a client moves
            *toward* the head's decision boundary and stops there instead of being pushed
            across it, so the attribute is removed rather than inverted; the head itself
            trains and uploads exactly as with ``reverse``). ``trigger``, ``sut_skip``,
            ``pretrain_rounds`` and ``reverse_through`` apply alike; ``adaptive`` normalises
            the confusion gradient to norm ``tau``.
        confusion_target: The posterior ``confuse`` drives each client to: ``prior`` (the
            labelled clients' class proportions, what a head reading an uninformative
            representation predicts; a server learns them by secure aggregation of one-hot
            counts) or ``uniform``.
        representation: What the head reads: ``default`` (the local loss's user
            representation); for FedRAP ``residual_mean_dims`` (the residual ``D_u`` averaged
            over its embedding dimensions, an item-length vector: spec decision 7, the paper's
            "residual aggregated into a single dimension") or ``residual_mean_items``.
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
        trigger: Trigger = "always",
        pretrain_rounds: int = 0,
        sut_skip: Literal["loss", "grl"] = "loss",
        tau: float = 1.0,
        head_kind: Literal["mlp", "vae", "dsvae"] = "mlp",
        noise_variance: float = 4.0,
        noise_site: Literal["logits", "input"] = "logits",
        hidden: int = 100,
        representation: Representation = "default",
        reverse_through: Literal["noisy", "mean"] = "noisy",
        push: Push = "reverse",
        confusion_target: Literal["prior", "uniform"] = "prior",
    ) -> None:
        super().__init__()
        if push not in ("reverse", "confuse"):
            raise ValueError(f"push must be 'reverse' or 'confuse', got {push!r}")
        if confusion_target not in ("prior", "uniform"):
            raise ValueError(
                f"confusion_target must be 'prior' or 'uniform', got {confusion_target!r}"
            )
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite float > 0 or None, got {lr!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if trigger not in ("always", "correct", "adaptive"):
            raise ValueError(f"trigger must be 'always', 'correct' or 'adaptive', got {trigger!r}")
        if reverse_through not in ("noisy", "mean"):
            raise ValueError(f"reverse_through must be 'noisy' or 'mean', got {reverse_through!r}")
        if sut_skip not in ("loss", "grl"):
            raise ValueError(f"sut_skip must be 'loss' or 'grl', got {sut_skip!r}")
        if representation not in ("default", "residual_mean_dims", "residual_mean_items"):
            raise ValueError(
                "representation must be 'default', 'residual_mean_dims' or "
                f"'residual_mean_items', got {representation!r}"
            )
        if isinstance(pretrain_rounds, bool) or not isinstance(pretrain_rounds, int):
            raise ValueError(f"pretrain_rounds must be an int >= 0, got {pretrain_rounds!r}")
        if pretrain_rounds < 0:
            raise ValueError(f"pretrain_rounds must be >= 0, got {pretrain_rounds}")
        self.lr = None if lr is None else float(lr)
        self.optimizer = optimizer
        for name, value in (("weight", weight), ("grl_scale", grl_scale), ("tau", tau)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
        self.head = (
            head
            if head is not None
            else build_head(head_kind, input_dim, num_classes, hidden, noise_variance, noise_site)
        )
        self.weight = float(weight)
        self.grl_scale = float(grl_scale)
        self.trigger: Trigger = trigger
        self.pretrain_rounds = pretrain_rounds
        self.sut_skip = sut_skip
        self.tau = float(tau)
        self.representation: Representation = representation
        self.reverse_through = reverse_through
        self.push: Push = push
        self.confusion_target = confusion_target
        self.round_index = 0
        num_classes_ = int(getattr(self.head, "num_classes", num_classes))
        # Not persistent: it is recomputed from the labels whenever an engine is built, so
        # checkpoints of before this option still load.
        self.register_buffer(
            "class_prior", torch.full((num_classes_,), 1.0 / num_classes_), persistent=False
        )

    def start_round(self, round_index: int) -> None:
        self.round_index = round_index

    def observe_labels(self, labels: Tensor) -> None:
        """Set the ``prior`` confusion target to the labelled clients' class proportions.

        Raises:
            ValueError: ``confuse`` toward the prior with no labelled client, or a label
                outside the head's classes.
        """
        if self.push != "confuse" or self.confusion_target != "prior":
            return
        prior = cast(Tensor, self.class_prior)
        known = labels[labels >= 0].long()
        classes = prior.numel()
        if known.numel() == 0:
            raise ValueError("push='confuse' toward the class prior needs labelled clients")
        if int(known.max()) >= classes:
            raise ValueError(
                f"a label {int(known.max())} is outside the adversary's {classes} classes"
            )
        counts = torch.bincount(known.cpu(), minlength=classes).to(prior.dtype)
        prior.copy_(counts / counts.sum())

    @property
    def reversing(self) -> bool:
        """Whether this round reverses at all (False during the Pretrain phase)."""
        return self.round_index >= self.pretrain_rounds and (
            self.grl_scale > 0 if self.trigger != "adaptive" else self.tau > 0
        )

    def head_input(
        self, model: Recommender, local_loss: LocalLoss, batch: dict[str, Tensor]
    ) -> Tensor:
        """The representation the head reads (before any reversal).

        Raises:
            ValueError: A residual input on a backbone that is not FedRAP, or a width other
                than the head's ``input_dim``.
        """
        if self.representation == "default":
            rep = local_loss.representation(model, batch)
        elif not isinstance(model, FedRAP):
            raise ValueError(
                f"representation {self.representation!r} reads FedRAP's residual table, the "
                f"backbone is {type(model).__name__}"
            )
        else:
            residual = model.residual[0]  # [M, N]: the client's own table (id 0)
            rep = residual.mean(dim=1 if self.representation == "residual_mean_dims" else 0)
        expected = getattr(self.head, "input_dim", None)
        if expected is not None and rep.shape[-1] != expected:
            raise ValueError(
                f"the adversary head reads {expected} features, the {self.representation!r} "
                f"representation of {type(model).__name__} has {rep.shape[-1]}: set "
                "AdversaryTerm's input_dim to it"
            )
        return rep

    def logits(self, representation: Tensor) -> Tensor:
        """The head's logits on a representation ``[r]`` or ``[N, r]``, reversal included."""
        if not self.reversing:
            return self.head(representation.detach())
        if self.trigger == "adaptive":
            return self.head(normalized_reversal(representation, self.tau))
        return self.head(gradient_reversal(representation, self.grl_scale))

    def forward(
        self,
        model: Recommender,
        local_loss: LocalLoss,
        batch: dict[str, Tensor],
        label: Tensor,
    ) -> Tensor:
        rep = self.head_input(model, local_loss, batch)
        target = label.clamp_min(0).reshape(1)
        known = (label >= 0).to(rep.dtype)
        sut = self.trigger == "correct"
        two_paths = (
            self.reverse_through == "mean"
            or (sut and self.sut_skip == "grl")
            or self.push == "confuse"
        )
        if not self.reversing or (not sut and not two_paths):
            ce = F.cross_entropy(self.logits(rep).unsqueeze(0), target)
            return self.weight * known * ce
        if not two_paths:  # SUT, skipping a mis-predicted client's whole term
            # One forward: its prediction decides, and a skipped client's term is 0 (neither
            # the head nor the embedding gets a gradient from it).
            logits = self.head(gradient_reversal(rep, self.grl_scale))
            correct = (logits.detach().argmax(-1) == target[0]).to(rep.dtype)
            ce = F.cross_entropy(logits.unsqueeze(0), target)
            return self.weight * known * correct * ce
        # Two paths sharing one noise draw: the head's own loss on the detached representation
        # (what it trains and uploads), and the reversal through a frozen copy of the head
        # (its noisy logits, whose value equals the first path's, or its noise-free mean).
        noise = self._sample_noise(rep)
        logits = self._head(rep.detach(), noise)
        correct = (logits.detach().argmax(-1) == target[0]).to(rep.dtype)
        frozen = {n: p.detach() for n, p in self.head.named_parameters()}
        confuse = self.push == "confuse"
        # One identity-forward function for every push: the reversal multiplies the gradient
        # by -scale (ascent on the head's loss), the confusion by +scale (descent).
        normalize = self.trigger == "adaptive"
        scale = (self.tau if normalize else self.grl_scale) * (-1.0 if confuse else 1.0)
        reversed_rep = (
            rep.detach() if scale == 0 else cast(Tensor, _Reversal.apply(rep, scale, normalize))
        )
        kwargs: dict[str, Any] = (
            {"mean": True} if self.reverse_through == "mean" else {"noise": noise}
        )
        reversed_logits = functional_call(self.head, frozen, (reversed_rep,), kwargs)
        ce_head = F.cross_entropy(logits.unsqueeze(0), target)
        if confuse:
            # Cross-entropy to the target posterior: its gradient vanishes where the head
            # predicts the target, so a client stops at the boundary instead of crossing it.
            # class_prior stays uniform for confusion_target="uniform" (observe_labels).
            goal = cast(Tensor, self.class_prior).to(reversed_logits.dtype)
            ce_rev = -(goal * F.log_softmax(reversed_logits, dim=-1)).sum()
        else:
            ce_rev = F.cross_entropy(reversed_logits.unsqueeze(0), target)
        head_gate = correct if sut and self.sut_skip == "loss" else torch.ones_like(correct)
        reverse_gate = correct if sut else torch.ones_like(correct)
        return self.weight * known * (head_gate * ce_head + reverse_gate * ce_rev)

    def _sample_noise(self, rep: Tensor) -> HeadNoise | None:
        sample = getattr(self.head, "sample_noise", None)
        if sample is None or not self.head.training:
            return None
        return cast("HeadNoise | None", sample(rep))

    def _head(self, rep: Tensor, noise: HeadNoise | None) -> Tensor:
        if noise is None:
            return cast(Tensor, self.head(rep))
        return cast(Tensor, self.head(rep, noise=noise))


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
