"""Post-training attribute unlearning: a privacy objective against a retention objective.

The shared step of AttrCloak (Wu et al., Algorithm 1) and of the U2U-R / D2D-R baselines (Li et
al., MM 2023): compute a privacy loss on the user representation of *all* users (population
statistics, identical on every DDP rank), a retention loss (the recommender's own loss on the
batch in data-dependent mode, Eq. 20; the L2 distance to the original representation in
data-free mode, Eq. 21), one synchronised backward pass per objective, and let a gradient
combiner (MGDA, fixed weights...) choose the weights (Eq. 22-26). Only user-side parameters are
updated ("parameter self-sharing"): item embeddings and the scorer stay frozen.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_unlearn.datamodules.protocols import AttributeData, ModalData, conforms, require_data
from lit_unlearn.methods.attribute.retention import embedding_regularization
from lit_unlearn.optim import (
    FixedWeights,
    GradientCombiner,
    assign_flat_grad,
    flatten_grads,
)
from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.unlearning.contract import RepresentationTask
from lit_unlearn.validation import check_non_negative

Mode = Literal["auto", "dd", "df"]


def check_attribute_names(name: str, names: list[str] | None) -> list[str] | None:
    """``names`` if ``None`` or a non-empty list without repeats.

    Raises:
        ValueError: An empty list or a repeated name.
    """
    if names is not None and (not names or len(set(names)) != len(names)):
        raise ValueError(f"{name} must be a non-empty list without repeats, got {names}")
    return names


Target = Literal["parameters", "representation"]


def permuted_codes(codes: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Each attribute's codes shuffled among its labelled users (unlabelled stay ``-1``):
    the class sizes are kept, the link to the users is cut. Seeded by ``seed`` and the
    attribute's position, the same on every DDP rank."""
    out = {}
    for i, (name, c) in enumerate(codes.items()):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        labelled = torch.nonzero(c >= 0).flatten()
        shuffled = c.clone()
        order = torch.randperm(labelled.numel(), generator=gen).to(c.device)
        shuffled[labelled] = c[labelled][order]
        out[name] = shuffled
    return out


class AttributeUnlearning(UnlearningCallback[RepresentationTask]):
    """Base for attribute unlearning callbacks (privacy objective vs retention objective).

    Args:
        checkpoint: Trained model to unlearn (see :class:`UnlearningCallback`).
        attributes: Attributes to forget (default: every attribute the DataModule encodes).
        mode: ``dd`` (retention = recommendation loss on interactions), ``df`` (retention =
            L2 to the original user representation; no interactions), ``auto`` (from the
            DataModule's mode).
        combiner: How the two objectives' gradients are combined.
        lr: Adam learning rate over the user-side parameters.
        reg_reduction: Eq. 21 sums over users (``sum``); the default ``mean`` divides by the
            user count, so the privacy/retention trade-off of fixed weights and of clipped
            MGDA does not change with the number of users.
        optimizer: ``adam`` or ``sgd`` over the user-side parameters.
        target: What the optimiser updates. ``parameters``: the user-side parameters that
            produce the representation (user embeddings and user tower/propagation input).
            ``representation``: the user representation itself, as Algorithm 1 of AttrCloak
            writes it (a per-user offset added to the trained model's output, see
            :meth:`~lit_unlearn.models.base.Recommender.enable_user_shift`; for MF and NeuMF,
            whose representation is the embedding table, the same as ``parameters``).
        privacy_fraction: Share of the users the privacy objective sees per step (a fresh
            random subset each step, :meth:`privacy_subset`). ``1.0`` is the paper: the whole
            population every step, which matches its class statistics exactly and inverts the
            attribute for held-out users (issue 23); ``< 1`` is the robust variant.
        privacy_seed: Seed of the per-step subsets (``None``: the run's seed, i.e.
            ``torch.initial_seed()`` after ``seed_everything``, the same on every rank).
        dd_anchor: Data-dependent mode only: weight of Eq. 21's L2 distance to the original
            representation added to Eq. 20's recommendation loss in the retention objective.
            ``0`` is the paper. The recommendation loss alone does not say *where* the users
            should stay, only how they should rank the training items: with the user tower
            trained (``target='parameters'``) a privacy-heavy MGDA weight moves the shared tower
            far and the BPR term keeps fitting training pairs, which costs held-out ranking (and
            re-teaches the attribute, docs/attrcloak.md); the anchor is a trust region around
            the model that was evaluated.
        permute_labels: The negative control: with a seed, every attribute's labels are
            shuffled among its labelled users before unlearning (:func:`permuted_codes`), so the
            method runs exactly as it would but against labels that carry nothing. What it
            then "removes" and what it costs is the procedure's own doing, not the attribute's
            (docs/attrcloak.md: on ML-100K AdversarialConfusion removes gender as far, at the
            same ranking cost, against permuted labels). ``None``: the real labels.
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
        privacy_fraction: float = 1.0,
        privacy_seed: int | None = None,
        dd_anchor: float = 0.0,
        permute_labels: int | None = None,
    ) -> None:
        super().__init__(checkpoint=checkpoint, lr=lr, optimizer=optimizer)
        if permute_labels is not None and (
            isinstance(permute_labels, bool) or not isinstance(permute_labels, int)
        ):
            raise ValueError(f"permute_labels must be an int seed or None, got {permute_labels!r}")
        self.permute_labels = permute_labels
        self.dd_anchor = float(check_non_negative("dd_anchor", dd_anchor))
        if (
            isinstance(privacy_fraction, bool)
            or not isinstance(privacy_fraction, (int, float))
            or not 0.0 < float(privacy_fraction) <= 1.0
        ):
            raise ValueError(f"privacy_fraction must be in (0, 1], got {privacy_fraction!r}")
        self.privacy_fraction = float(privacy_fraction)
        self.privacy_seed = privacy_seed
        # Resolved in setup: the configured seed, else the run's (seed_everything) seed.
        self._subset_seed = 0 if privacy_seed is None else int(privacy_seed)
        if target not in ("parameters", "representation"):
            raise ValueError(f"target must be 'parameters' or 'representation', got {target!r}")
        self.target = target
        if mode not in ("auto", "dd", "df"):
            raise ValueError(f"mode must be 'auto', 'dd' or 'df', got {mode!r}")
        check_attribute_names("attributes", attributes)
        if reg_reduction not in ("sum", "mean"):
            raise ValueError(f"reg_reduction must be 'sum' or 'mean', got {reg_reduction!r}")
        self.attributes = attributes
        self.requested_mode = mode
        self.reg_reduction = reg_reduction
        self.mode: Literal["dd", "df"] = "df" if mode == "df" else "dd"
        self._configured_combiner = combiner
        self._default_combiner: tuple[str, GradientCombiner] | None = None
        self._codes: dict[str, Tensor] = {}
        self._num_classes: dict[str, int] = {}
        self._reference: Tensor | None = None
        self.last_weights: Tensor | None = None
        # alpha_u of every step (0-dim tensors, no host sync per step): shows how often a
        # clipped MGDA sits at a bound, i.e. acts as fixed weights.
        self._alpha_trace: list[Tensor] = []
        self.elapsed_s = 0.0
        self._t0 = 0.0

    # ------------------------------------------------------------------ method-specific parts
    def default_combiner(self, mode: Literal["dd", "df"]) -> GradientCombiner:
        """Combiner used when none is configured, for the resolved mode."""
        return FixedWeights([0.5, 0.5])

    @property
    def combiner(self) -> GradientCombiner:
        """The configured combiner, else :meth:`default_combiner` for the current mode.

        The one place a method's combiner is built: ``mode='auto'`` is resolved from the
        DataModule only in ``setup``, and the default (e.g. AttrCloak's mode-specific alpha_u
        bounds) is built for the mode as resolved, once per mode.
        """
        if self._configured_combiner is not None:
            return self._configured_combiner
        if self._default_combiner is None or self._default_combiner[0] != self.mode:
            self._default_combiner = (self.mode, self.default_combiner(self.mode))
        return self._default_combiner[1]

    @abstractmethod
    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss whose minimum hides the attributes, and per-attribute terms for logging."""

    # ------------------------------------------------------------------ setup
    task_kind = RepresentationTask

    def prepare_model(self, task: RepresentationTask) -> None:
        if self.target == "representation":
            task.enable_representation_offset()  # None for table backbones: the table is it

    def trainable_parameters(self, task: RepresentationTask) -> list[torch.nn.Parameter]:
        offset = task.representation_offset
        if self.target == "representation" and offset is not None:
            return [offset]
        return task.representation_parameters()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if self.privacy_seed is None:
            self._subset_seed = torch.initial_seed() % (2**31)
        dm: AttributeData = require_data(
            getattr(trainer, "datamodule", None), AttributeData, type(self).__name__
        )
        # A DataModule that does not say its mode is taken to serve interactions (DD).
        data_mode = cast(ModalData, dm).mode if conforms(dm, ModalData) else "data_dependent"
        self.mode = {"dd": "dd", "df": "df"}.get(
            self.requested_mode, "df" if data_mode == "data_free" else "dd"
        )  # type: ignore[assignment]
        if self.mode == "dd" and data_mode == "data_free":
            raise ValueError(
                "mode 'dd' needs interactions, but the DataModule is in data_free mode"
            )
        if self.mode == "df" and self.dd_anchor > 0:
            raise ValueError(
                f"dd_anchor={self.dd_anchor} only applies in mode 'dd': the data-free retention "
                "is already the L2 distance it adds (Eq. 21)"
            )
        attrs = dm.user_attributes
        names = self.attributes if self.attributes is not None else attrs.names
        for name in names:
            if name not in attrs.codes:
                raise KeyError(f"unknown attribute {name!r}; the data encodes {attrs.names}")
        self._codes = {n: attrs.codes[n] for n in names}
        self._num_classes = {n: attrs.num_classes(n) for n in names}
        if self.permute_labels is not None:
            self._codes = permuted_codes(self._codes, self.permute_labels)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, RepresentationTask)
        if pl_module.representation_needs_data and not pl_module.has_training_data:
            raise ValueError(
                f"{type(pl_module.model).__name__} propagates over the interaction graph: it "
                "cannot be unlearned data-free (no interactions); use mode 'dd'"
            )
        device = pl_module.device
        self._codes = {n: c.to(device) for n, c in self._codes.items()}
        # Eq. 21's reference em_i: the representation of the model *before* unlearning. On
        # resume Lightning has already restored the checkpoint's partly unlearned weights; the
        # reference must still come from the original model, or the retention term measures
        # the distance to a moving target (it read 0 at the first resumed step).
        with torch.no_grad(), self.original_weights(pl_module):
            self._reference = pl_module.representation().detach().clone()
        super().on_train_start(trainer, pl_module)
        self._alpha_trace = []
        self._t0 = time.perf_counter()

    @property
    def alpha_trace(self) -> Tensor:
        """alpha_u (privacy weight on the simplex) of every step of the last fit, ``[steps]``."""
        if not self._alpha_trace:
            return torch.zeros(0)
        return torch.stack(self._alpha_trace).cpu()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.elapsed_s = time.perf_counter() - self._t0

    # ------------------------------------------------------------------ the step
    def retention_loss(
        self, task: RepresentationTask, representation: Tensor, batch: dict[str, Tensor]
    ) -> Tensor:
        """Eq. 20 (DD: the recommender's loss on the batch, plus ``dd_anchor`` x Eq. 21) or
        Eq. 21 (DF: L2 to the original)."""
        if self.mode == "dd":
            loss = task.task_loss(batch)
            if self.dd_anchor > 0:
                loss = loss + self.dd_anchor * self.anchor_distance(representation)
            return loss
        return self.anchor_distance(representation)

    def anchor_distance(self, representation: Tensor) -> Tensor:
        """Eq. 21: how far the representation moved from the original one (the DF retention
        and the DD anchor). Squared Euclidean distance; a method may measure it otherwise."""
        assert self._reference is not None
        return embedding_regularization(
            representation, self._reference, reduction=self.reg_reduction
        )

    def training_step(
        self, task: RepresentationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        rep = task.representation()
        subset = self.privacy_subset(rep.shape[0], task.global_step, rep.device)
        if subset is None:
            privacy, per_attribute = self.privacy_loss(rep)
        else:
            with self._restricted_codes(subset):
                privacy, per_attribute = self.privacy_loss(rep[subset])
        retention = self.retention_loss(task, rep, batch)
        for name, value in (("privacy", privacy), ("retention", retention)):
            if not torch.isfinite(value):
                raise FloatingPointError(
                    f"{type(self).__name__}: non-finite {name} loss at step {task.global_step}"
                )
        opt = task.optimizers()
        assert isinstance(opt, LightningOptimizer)
        weights = self.combine(task, opt, [privacy, retention])
        opt.step()
        self.last_weights = weights.detach()
        # alpha_u on the simplex (raw weights may not sum to 1, e.g. normalised MGDA)
        alpha_u = (weights[0] / weights.sum().clamp_min(1e-12)).detach().float()
        self._alpha_trace.append(alpha_u)
        total = weights[0] * privacy.detach() + weights[1] * retention.detach()
        task.log_dict(
            {
                "unlearn/privacy": privacy.detach(),
                "unlearn/retention": retention.detach(),
                "unlearn/alpha_u": alpha_u,
                **{f"unlearn/privacy/{n}": v.detach() for n, v in per_attribute.items()},
            },
            on_step=True,
            on_epoch=False,
        )
        return total

    def privacy_subset(self, num_users: int, step: int, device: torch.device) -> Tensor | None:
        """The users the privacy objective sees at ``step`` (``None``: all of them).

        With ``privacy_fraction < 1`` every step draws ``round(fraction * N)`` users without
        replacement. Matching the class statistics of the *whole* population exactly is what
        inverts the signal (issue 23, docs/attrcloak.md "Why full-population matching
        inverts"): once the in-sample class means are equal, each held-out part's class means
        are the negative of the rest's, and an attacker trained on one part anti-learns on the
        other. A fresh random subset per step never lets one fixed set of moments be matched
        exactly. The draw depends only on ``(seed, step)``: identical on every DDP rank
        (the representation and codes are the full population on each) and after a resume.

        Args:
            num_users: Rows of the representation.
            step: The optimiser step (``task.global_step``).
            device: Where the index goes.

        Returns:
            Sorted ``LongTensor`` of user rows, or ``None`` when the fraction is 1.
        """
        if self.privacy_fraction >= 1.0:
            return None
        k = min(num_users, max(2, round(self.privacy_fraction * num_users)))
        gen = torch.Generator().manual_seed(self._subset_seed * 1_000_003 + int(step))
        return torch.randperm(num_users, generator=gen)[:k].sort().values.to(device)

    @contextmanager
    def _restricted_codes(self, subset: Tensor) -> Iterator[None]:
        """Let :meth:`privacy_loss` see only ``subset``'s codes (its rows of the representation)."""
        full = self._codes
        self._codes = {n: c[subset] for n, c in full.items()}
        try:
            yield
        finally:
            self._codes = full

    def combine(
        self, task: RepresentationTask, opt: LightningOptimizer, losses: list[Tensor]
    ) -> Tensor:
        """Backward each objective, combine their gradients, leave the result in ``.grad``.

        Every ``manual_backward`` is all-reduced under DDP, so the Gramian and the weights are
        identical on every rank (``torch.autograd.grad`` would not be synchronised). A combiner
        whose weights do not depend on the gradients (:meth:`GradientCombiner.static_weights`,
        e.g. fixed weights) needs no per-objective gradients: one backward of the weighted sum
        gives the same direction for a fraction of the cost.

        Returns:
            The objective weights ``[m]``.
        """
        combiner = self.combiner
        params = [p for p in self.trainable_parameters(task) if p.requires_grad]
        static = combiner.static_weights(len(losses))
        if static is not None:
            w = static.to(device=losses[0].device, dtype=losses[0].dtype)
            opt.zero_grad(set_to_none=True)
            task.manual_backward(sum(wi * li for wi, li in zip(w, losses, strict=True)))
            return w
        grads = []
        for i, loss in enumerate(losses):
            opt.zero_grad(set_to_none=True)
            task.manual_backward(loss, retain_graph=i < len(losses) - 1)
            grads.append(flatten_grads(params))
        direction, w = combiner(torch.stack(grads))
        assign_flat_grad(params, direction)
        return w

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.elapsed_s = float(state_dict.get("elapsed_s", 0.0))
