"""Cross-fitted adversarial confusion as an attribute-unlearning callback (not in the papers).

The privacy objective of :class:`AdversarialConfusion` is
:func:`~lit_unlearn.methods.attribute.confusion.confusion_divergence`: every labelled user is
pushed to the decision boundary of an MLP attacker trained on the *other* users (issue 23:
remove, do not invert). The attackers ("heads") and the representation alternate inside each
step: the heads take ``head_steps`` Adam steps on the current, detached representation, then the
representation takes one step against the frozen heads, balanced against retention by the
combiner (MGDA by default) exactly as AttrCloak's step (:class:`AttributeUnlearning`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_unlearn.methods.attribute.base import AttributeUnlearning, Mode, Target
from lit_unlearn.methods.attribute.confusion import (
    FoldHeads,
    confusion_divergence,
    head_training_loss,
    replicated_folds,
)
from lit_unlearn.methods.attribute.retention import score_regularization
from lit_unlearn.models.base import Recommender
from lit_unlearn.optim import MGDA, GradientCombiner
from lit_unlearn.unlearning.contract import RepresentationTask
from lit_unlearn.validation import check_bounds, check_count, check_non_negative, check_positive


def item_scoring(
    task: RepresentationTask,
) -> tuple[Tensor, Callable[[Tensor, Tensor], Tensor] | None]:
    """The task's fixed item representations and its scorer (``None``: plain dot product).

    Raises:
        TypeError: The task's model is not a recommender with ``embed`` and ``score``.
    """
    model = getattr(task, "model", None)
    if not isinstance(model, Recommender):
        raise TypeError(
            f"retention_metric='scores' needs a recommender task, got model {type(model).__name__}"
        )
    with torch.no_grad():
        items = model.embed(graph=getattr(task, "graph", None))[1].detach()
    return items, None if model.scores_by_dot() else model.score


def standardise(representation: Tensor) -> Tensor:
    """Z-score every dimension with the population's (detached) mean and standard deviation, as
    an attacker preprocesses; the gradient reaches the representation through the affine map."""
    mean = representation.detach().mean(dim=0)
    std = representation.detach().std(dim=0).clamp_min(1e-6)
    return (representation - mean) / std


class AdversarialConfusion(AttributeUnlearning):
    """Push each user to the decision boundary of attackers that never saw it.

    Per attribute, the labelled users are split once into ``folds`` stratified folds; head ``k``
    (``layers`` linear layers of width ``hidden``, the audit's MLP attacker by default) is
    trained with class-balanced cross-entropy on the users outside fold ``k``; the users of
    fold ``k`` descend ``KL(uniform || head_k posterior)`` (the confusion loss of Roy & Boddeti,
    CVPR 2019, cross-fitted here). The loss's gradient vanishes at the head's boundary, so
    users stop there rather than crossing it, and the head that judges a user never trained on
    it, so matching it does not write the user's own noise into the others' target (issue 23's
    inversion). The heads keep training on the moving representation (``head_steps`` per step,
    ``head_warmup`` before the first), so the representation faces the attacker of its current
    state, not of the original one.

    Args:
        checkpoint: Trained model to unlearn.
        attributes: Attributes to forget together (default: all the data encodes); the privacy
            loss is the mean of their confusion divergences.
        mode: ``dd``, ``df`` or ``auto``.
        combiner: Gradient combiner; default ``MGDA`` with ``bounds``.
        lr: Optimiser learning rate over the user side.
        reg_reduction: Reduction of Eq. 21's retention.
        optimizer: ``adam`` or ``sgd`` over the user side.
        target: ``parameters`` or ``representation`` (see :class:`AttributeUnlearning`).
        dd_anchor: DD only: weight of Eq. 21 added to the recommendation loss.
        privacy_seed: Seed of the folds and the heads' initialisation (``None``: the run's
            seed); the same on every DDP rank.
        permute_labels: The negative control (see :class:`AttributeUnlearning`).
        bounds: alpha_u bounds of the default MGDA combiner. The lower bound is what moves the
            users: the data-free retention has zero gradient at the original model, so MGDA
            over ``[0, 1]`` puts all weight on it and nothing moves; on ML-100K MGDA sits at the
            lower bound throughout (0.1: nothing removed; 0.5: docs/attrcloak.md).
        folds: Folds of the cross-fitting (heads per attribute, ``>= 2``): each head trains on
            ``(folds - 1) / folds`` of the labelled users.
        hidden: Hidden width of the heads.
        layers: Linear layers per head (1: multinomial logistic regression).
        head_lr: Adam learning rate of the heads.
        head_weight_decay: L2 on the heads' weights (Adam's ``weight_decay``).
        head_steps: Head steps on the current representation before each representation step.
        head_warmup: Head steps on the original representation before the first step (the
            attacker of the model as trained).
        refresh_every: Every this many steps redraw the folds and train fresh heads from a new
            initialisation (with the warm-up): an attacker the representation has not been
            tracking. ``0``: never (measured on planted data: the representation then learns
            to fool the heads it tracks, and a fresh logistic regression still reads it).
        replicates: Independent fold draws per attribute (``folds x replicates`` heads); each
            user's push is the mean over its ``replicates`` held-out heads, so what a single
            head learnt from its training users' noise averages out.
        retention_metric: How Eq. 21 (the DF retention, and the DD anchor) measures a move:
            ``euclidean`` (the paper) or ``scores`` (the squared change of the user's scores
            over every item, :func:`~lit_unlearn.methods.attribute.retention.
            score_regularization`; needs a recommender task whose model has ``embed`` and
            ``score``).
        margin: Hinge on each user's divergence
            (:func:`~lit_unlearn.methods.attribute.confusion.confusion_divergence`): users
            whose held-out heads are within ``margin`` nats of undecided are not pushed.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "auto",
        combiner: GradientCombiner | None = None,
        lr: float = 1e-3,
        reg_reduction: Literal["sum", "mean"] = "mean",
        optimizer: Literal["adam", "sgd"] = "adam",
        target: Target = "parameters",
        dd_anchor: float = 0.0,
        privacy_seed: int | None = None,
        permute_labels: int | None = None,
        bounds: tuple[float, float] = (0.5, 1.0),
        folds: int = 5,
        hidden: int = 100,
        layers: int = 3,
        head_lr: float = 1e-2,
        head_weight_decay: float = 1e-4,
        head_steps: int = 5,
        head_warmup: int = 100,
        refresh_every: int = 25,
        replicates: int = 1,
        retention_metric: Literal["euclidean", "scores"] = "euclidean",
        margin: float = 0.0,
    ) -> None:
        super().__init__(
            checkpoint=checkpoint,
            attributes=attributes,
            mode=mode,
            combiner=combiner,
            lr=lr,
            reg_reduction=reg_reduction,
            optimizer=optimizer,
            target=target,
            dd_anchor=dd_anchor,
            privacy_seed=privacy_seed,
            permute_labels=permute_labels,
        )
        self.bounds = check_bounds("bounds", bounds)
        self.folds = check_count("folds", folds, minimum=2)
        self.hidden = check_count("hidden", hidden)
        self.layers = check_count("layers", layers)
        self.head_lr = check_positive("head_lr", head_lr)
        self.head_weight_decay = check_non_negative("head_weight_decay", head_weight_decay)
        self.head_steps = check_count("head_steps", head_steps)
        self.head_warmup = check_count("head_warmup", head_warmup, minimum=0)
        self.refresh_every = check_count("refresh_every", refresh_every, minimum=0)
        self.replicates = check_count("replicates", replicates)
        if retention_metric not in ("euclidean", "scores"):
            raise ValueError(
                f"retention_metric must be 'euclidean' or 'scores', got {retention_metric!r}"
            )
        self.retention_metric = retention_metric
        self.margin = check_non_negative("margin", margin)
        self._items: Tensor | None = None
        self._score: Callable[[Tensor, Tensor], Tensor] | None = None
        self._heads: dict[str, FoldHeads] = {}
        self._head_optim: dict[str, torch.optim.Adam] = {}
        self._folds: dict[str, Tensor] = {}
        #: Heads' state from a resumed checkpoint, applied when the heads are built.
        self._pending: dict[str, Any] | None = None
        self._round = 0  # how many times the heads were (re)built

    def default_combiner(self, mode: Literal["dd", "df"]) -> GradientCombiner:
        return MGDA(bounds=self.bounds)

    # ------------------------------------------------------------------ heads
    def _generator(self, name: str, salt: int) -> torch.Generator:
        seed = (self._subset_seed * 1_000_003 + salt * 7_919 + zlib.crc32(name.encode())) % (2**63)
        return torch.Generator().manual_seed(seed)

    def _build_heads(self, dim: int, device: torch.device) -> None:
        """Draw the folds and initialise the heads of every attribute (round ``_round``): the
        same on every DDP rank (seeded by the run's seed, the round and the name)."""
        for name, codes in self._codes.items():
            gen = self._generator(name, self._round)
            self._folds[name] = replicated_folds(codes, self.folds, self.replicates, gen).to(device)
            heads = FoldHeads(
                self.folds * self.replicates,
                dim,
                self._num_classes[name],
                self.hidden,
                self.layers,
                gen,
            ).to(device)
            self._heads[name] = heads
            self._head_optim[name] = torch.optim.Adam(
                heads.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay
            )
        self._round += 1

    def _train_heads(self, x: Tensor, steps: int) -> None:
        """``steps`` Adam steps of every head on the detached representation ``x``."""
        x = x.detach()
        for name, heads in self._heads.items():
            opt = self._head_optim[name]
            codes = self._codes[name]
            with torch.enable_grad():
                for _ in range(steps):
                    opt.zero_grad(set_to_none=True)
                    loss = head_training_loss(
                        heads, x, codes, self._folds[name], self._num_classes[name]
                    )
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"AdversarialConfusion: non-finite head loss for {name!r}"
                        )
                    loss.backward()
                    opt.step()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        assert isinstance(pl_module, RepresentationTask)
        if self.retention_metric == "scores":
            self._items, self._score = item_scoring(pl_module)
        with torch.no_grad():
            rep = pl_module.representation()
        self._round = 0
        self._build_heads(rep.shape[1], rep.device)
        if self._pending is not None:
            self._restore_heads(self._pending, rep.device)
            self._pending = None
        else:
            self._train_heads(standardise(rep), self.head_warmup)

    def anchor_distance(self, representation: Tensor) -> Tensor:
        if self.retention_metric == "euclidean":
            return super().anchor_distance(representation)
        assert self._reference is not None and self._items is not None
        return score_regularization(
            representation, self._reference, self._items, self._score, reduction=self.reg_reduction
        )

    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Train the heads ``head_steps`` on the current representation, then the mean over
        attributes of each one's confusion divergence against the frozen heads."""
        if not self._heads:
            raise RuntimeError("AdversarialConfusion: the heads are built at train start")
        x = standardise(representation)
        self._train_heads(x, self.head_steps)
        per = {
            name: confusion_divergence(heads, x, self._folds[name], self.margin)
            for name, heads in self._heads.items()
        }
        return torch.stack(list(per.values())).mean(), per

    def training_step(
        self, task: RepresentationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        step = int(task.global_step)
        if self.refresh_every and step > 0 and step % self.refresh_every == 0:
            with torch.no_grad():
                rep = task.representation()
            self._build_heads(rep.shape[1], rep.device)
            self._train_heads(standardise(rep), self.head_warmup)
        return super().training_step(task, batch, batch_idx)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["heads"] = {
            name: {
                "weights": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
                "optim": self._head_optim[name].state_dict(),
                "folds": self._folds[name].cpu(),
            }
            for name, heads in self._heads.items()
        }
        state["round"] = self._round
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("heads"):
            self._pending = {"heads": state_dict["heads"], "round": state_dict.get("round", 1)}

    def _restore_heads(self, pending: dict[str, Any], device: torch.device) -> None:
        saved = pending["heads"]
        if set(saved) != set(self._heads):
            raise ValueError(
                f"the checkpoint's confusion heads cover {sorted(saved)}, this run forgets "
                f"{sorted(self._heads)}"
            )
        for name, entry in saved.items():
            self._heads[name].load_state_dict(entry["weights"])
            self._head_optim[name].load_state_dict(entry["optim"])
            self._folds[name] = entry["folds"].to(device)
        self._round = int(pending["round"])
