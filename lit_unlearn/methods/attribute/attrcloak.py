"""AttrCloak (Wu et al., "Defending against Attribute Inference Attacks in Post-Training of
Recommendation Systems via Unlearning"): Gaussian mutual-information bound + MGDA.
"""

from __future__ import annotations

import zlib
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_unlearn.methods.attribute.base import (
    AttributeUnlearning,
    Mode,
    Target,
    check_attribute_names,
)
from lit_unlearn.methods.attribute.crossfit import crossfit_covariance_loss
from lit_unlearn.methods.attribute.erasure import add_representation_shift, audited_representation
from lit_unlearn.methods.attribute.gaussian_mi import (
    calibrated_covariance_bound,
    gaussian_covariance_bound,
    multi_attribute_mi_bound,
    spectral_covariance_band,
)
from lit_unlearn.optim import MGDA, GradientCombiner
from lit_unlearn.unlearning.calibrated import (
    Calibration,
    ErasureResult,
    check_calibration,
    erase_attributes,
)
from lit_unlearn.unlearning.contract import RepresentationTask
from lit_unlearn.unlearning.transport import (
    TransportMoments,
    TransportResult,
    check_transport_options,
    transport_attributes,
)
from lit_unlearn.validation import check_bounds, check_count, check_non_negative


class AttrCloak(AttributeUnlearning):
    """Post-training attribute unlearning with dual-objective MGDA (Algorithm 1).

    Privacy objective: the variational upper bound of I(em; a_j), the size-weighted KL between
    per-class Gaussians and the global Gaussian of the user representation (Eq. 12-18),
    averaged over the attributes (Eq. 19). Retention: the recommendation loss (DD, Eq. 20) or
    the L2 distance to the original representation (DF, Eq. 21). Each step weighs the two
    gradients with the MGDA closed form (Eq. 26), alpha_u clipped to [0, 1] in DD and
    [0.1, 1] in DF unless another combiner is given (e.g. ``FixedWeights`` for the Fig. 5
    ablation).

    Args:
        checkpoint: Trained model to unlearn.
        attributes: Attributes to forget together (default: all the data encodes).
        mode: ``dd``, ``df`` or ``auto`` (from the DataModule's mode).
        combiner: Gradient combiner; default ``MGDA`` with the paper's bounds for the mode.
        lr: Adam learning rate over user-side parameters.
        shrinkage: Ridge added to every covariance, relative to its mean variance, so small
            classes and singular covariances stay well defined.
        reg_reduction: Reduction of Eq. 21 (the paper sums over users; ``mean`` by default so
            the trade-off does not scale with the user count).
        dd_bounds: Bounds of alpha_u in data-dependent mode.
        df_bounds: Bounds of alpha_u in data-free mode.
        optimizer: ``adam`` or ``sgd`` (Algorithm 1's gradient descent).
        normalize: Gradient normalisation of the default MGDA combiner (``none`` = the paper).
        precision: dtype of the covariance algebra. ``float64`` is the safe default;
            ``float32`` roughly halves the step time (batched Cholesky dominates) and relies on
            the ridge for conditioning.
        target: ``parameters`` (user embeddings and user tower) or ``representation`` (the
            user representation itself, Algorithm 1's ``em'_i``, as a per-user offset on the
            trained model's output); see :class:`AttributeUnlearning`.
        privacy_fraction: Share of users the MI bound sees per step (fresh random subset);
            ``1.0`` = the paper (whole population), ``< 1`` the robust variant that does not
            invert the attribute for held-out users (see :class:`AttributeUnlearning`).
        privacy_seed: Seed of the per-step subsets (``None``: the run's seed).
        privacy_moments: ``both`` (the paper: class means and covariances matched to the
            global Gaussian) or ``covariance`` (only the class covariances, to the pooled
            within-class one: :func:`~lit_unlearn.methods.attribute.gaussian_mi.
            gaussian_covariance_bound`; the class means are left to
            :class:`~lit_unlearn.methods.attribute.erasure.CalibratedErasure`) or ``crossfit``
            (the class covariances' cross-fitted agreement held at 0 from both sides: directions
            chosen on one random part of the users, tested on another;
            :func:`~lit_unlearn.methods.attribute.crossfit.crossfit_covariance_loss`).
        crossfit_directions: With ``crossfit``: directions chosen per class and part.
        crossfit_parts: With ``crossfit``: parts of each random split (``>= 2``).
        crossfit_splits: With ``crossfit``: splits averaged per factor (less gradient noise).
        final_transport: After the last epoch's step (before or after the final erasure, if
            any: :attr:`transport_order`; before the checkpoint is saved), give each class of
            every attribute of :attr:`privacy_attributes` the covariance of a random relabelling
            (:func:`~lit_unlearn.unlearning.transport.transport_attributes`): matching the class
            covariances exactly removes their noise with their signal, and held-out users'
            spreads come out inverted (a second-order attacker at one-vs-rest AUC 0.27 to 0.36
            on ML-100K); the transport writes back noise of the size removed, so the class
            statistics look like the permutation null's (docs/attrcloak.md "Relabelling
            transport").
        transport_shrinkage: Share of the pooled within-class covariance mixed into both
            sides of each class's transport map (needed where a class has fewer users than
            dimensions; it also scales the written noise by ``1 - shrinkage``: keep it small).
        transport_moments: ``covariance`` (class means left to the final erasure) or ``both``
            (the class means moved to the relabelled classes' means too).
        transport_rank_tol: The transport acts on the directions whose pooled within-class
            variance is at least this share of the largest (identity on the rest): ``1e-6``
            keeps every direction a user spreads along; larger values keep the maps to the
            leading directions, where classes of a few dozen users can estimate them.
        transport_order: With ``final_erasure`` too: ``before_erasure`` (the erasure is
            calibrated on the transported representation; the order the first results were
            measured in, kept as the default so they stay reproducible) or ``after_erasure``
            (the erasure calibrated on the representation the optimiser left, then the
            transport, which keeps class means, so the erased means stay). The shipped robust
            configs use ``after_erasure``: on ML-100K (3 seeds) it costs less ranking (DF:
            -5.6% against -6.7% sampled NDCG@10, -3.1% against -9.0% full) with the same
            leakage (docs/attrcloak.md "Relabelling transport").
        final_erasure: After the last epoch's step (before its checkpoint is saved), apply
            :func:`~lit_unlearn.unlearning.calibrated.erase_attributes` to the
            representation: the class means, null-calibrated (issue 23's robust recipe with
            ``privacy_moments: covariance``: second moments matched by the optimiser, first
            moments erased without inverting held-out users).
        erasure_permutations: Label permutations of that erasure's null.
        erasure_calibration: ``direction`` (one shrink per discriminant direction) or
            ``class`` (per class and direction, so classes of a few dozen users are not
            over-shrunk): :func:`~lit_unlearn.unlearning.calibrated.calibrated_erasure`.
        erasure_expand: Also expand the directions the covariance stage left *below* the
            permutation null back to it (step 4 of :mod:`lit_unlearn.unlearning.calibrated`):
            the class means there are closer than label noise puts them and held-out users
            would be ranked the wrong way round.
        covariance_null: With ``privacy_moments: covariance``: label permutations behind the
            null band the covariance term is held in
            (:func:`~lit_unlearn.methods.attribute.gaussian_mi.calibrated_covariance_bound`:
            pulled down to the relabelled bounds' mean, pushed up from below their 5%
            quantile), so the optimiser stops at the noise level. ``0`` = match the sample
            covariances exactly, which inverts held-out users' second moments
            (docs/attrcloak.md "Second moments invert too").
        covariance_band: What :attr:`covariance_null`'s band holds: ``sum`` (the bound, the
            sum of every direction's divergence) or ``spectrum`` (each class's divergences
            rank by rank against the relabellings' same ranks:
            :func:`~lit_unlearn.methods.attribute.gaussian_mi.spectral_covariance_band`).
        dd_anchor: DD only: weight of Eq. 21's L2 to the original representation added to
            the Eq. 20 retention (``0`` = the paper; see :class:`AttributeUnlearning`).
        privacy_attributes: The attributes the optimised privacy term covers (default: all of
            ``attributes``); the final erasure still covers every attribute. With
            ``privacy_moments: covariance`` this spends the (costly) second-moment matching
            only where the class covariances carry the attribute: on ML-100K occupation's
            21 classes (7-196 users) are near the permutation null for every non-linear
            attacker before unlearning, and matching their 128-d covariances moves the small
            classes' users far (docs/attrcloak.md).
        permute_labels: The negative control (see :class:`AttributeUnlearning`).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "auto",
        combiner: GradientCombiner | None = None,
        lr: float = 1e-3,
        shrinkage: float = 1e-3,
        reg_reduction: Literal["sum", "mean"] = "mean",
        dd_bounds: tuple[float, float] = (0.0, 1.0),
        df_bounds: tuple[float, float] = (0.1, 1.0),
        optimizer: Literal["adam", "sgd"] = "adam",
        normalize: Literal["none", "l2"] = "none",
        precision: Literal["float64", "float32"] = "float64",
        target: Target = "parameters",
        privacy_fraction: float = 1.0,
        privacy_seed: int | None = None,
        privacy_moments: Literal["both", "covariance", "crossfit"] = "both",
        final_transport: bool = False,
        transport_shrinkage: float = 0.05,
        transport_moments: TransportMoments = "covariance",
        transport_rank_tol: float = 1e-6,
        transport_order: Literal["before_erasure", "after_erasure"] = "before_erasure",
        final_erasure: bool = False,
        erasure_permutations: int = 30,
        erasure_calibration: Calibration = "direction",
        erasure_expand: bool = False,
        covariance_null: int = 0,
        covariance_band: Literal["sum", "spectrum"] = "sum",
        crossfit_directions: int = 4,
        crossfit_parts: int = 3,
        crossfit_splits: int = 1,
        dd_anchor: float = 0.0,
        privacy_attributes: list[str] | None = None,
        permute_labels: int | None = None,
    ) -> None:
        check_attribute_names("privacy_attributes", privacy_attributes)
        if (
            privacy_attributes is not None
            and attributes is not None
            and not set(privacy_attributes) <= set(attributes)
        ):
            raise ValueError(
                f"privacy_attributes {privacy_attributes} must be among attributes {attributes}"
            )
        self.privacy_attributes = privacy_attributes
        self.final_erasure = bool(final_erasure)
        self.final_transport = bool(final_transport)
        # Checked here, not at the last epoch: a bad config fails at parse time.
        check_transport_options(
            transport_shrinkage, transport_moments, transport_rank_tol, prefix="transport_"
        )
        self.transport_shrinkage = float(transport_shrinkage)
        self.transport_moments: TransportMoments = transport_moments
        self.transport_rank_tol = float(transport_rank_tol)
        if transport_order not in ("before_erasure", "after_erasure"):
            raise ValueError(
                f"transport_order must be 'before_erasure' or 'after_erasure', got "
                f"{transport_order!r}"
            )
        self.transport_order = transport_order
        self.transport_results: dict[str, TransportResult] = {}
        self.erasure_permutations = check_count("erasure_permutations", erasure_permutations)
        self.erasure_calibration = check_calibration(erasure_calibration)
        self.erasure_expand = bool(erasure_expand)
        if isinstance(covariance_null, bool) or not isinstance(covariance_null, int):
            raise ValueError(f"covariance_null must be an int >= 0, got {covariance_null!r}")
        if covariance_null < 0:
            raise ValueError(f"covariance_null must be >= 0, got {covariance_null}")
        if covariance_null and privacy_moments != "covariance":
            raise ValueError(
                "covariance_null floors the covariance term: it needs privacy_moments: covariance"
            )
        self.covariance_null = covariance_null
        if covariance_band not in ("sum", "spectrum"):
            raise ValueError(
                f"covariance_band must be 'sum' or 'spectrum', got {covariance_band!r}"
            )
        self.covariance_band = covariance_band
        self._null_permutations: dict[str, Tensor] = {}
        self.erasure_results: dict[str, ErasureResult] = {}
        if privacy_moments not in ("both", "covariance", "crossfit"):
            raise ValueError(
                f"privacy_moments must be 'both', 'covariance' or 'crossfit', got "
                f"{privacy_moments!r}"
            )
        self.crossfit_directions = check_count("crossfit_directions", crossfit_directions)
        self.crossfit_parts = check_count("crossfit_parts", crossfit_parts)
        self.crossfit_splits = check_count("crossfit_splits", crossfit_splits)
        if self.crossfit_parts < 2:
            raise ValueError(f"crossfit_parts must be >= 2, got {crossfit_parts}")
        #: The optimiser step the privacy term is evaluated at (seeds crossfit's splits).
        self._step = 0
        self.privacy_moments = privacy_moments
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
        self.precision = precision
        self.normalize = normalize
        # Checked here, not when MGDA is built at fit start: a bad config fails at parse time.
        self.dd_bounds = check_bounds("dd_bounds", dd_bounds)
        self.df_bounds = check_bounds("df_bounds", df_bounds)
        self.shrinkage = check_non_negative("shrinkage", shrinkage)
        super().__init__(
            checkpoint=checkpoint,
            attributes=attributes,
            mode=mode,
            combiner=combiner,
            lr=lr,
            reg_reduction=reg_reduction,
            optimizer=optimizer,
            target=target,
            privacy_fraction=privacy_fraction,
            privacy_seed=privacy_seed,
            dd_anchor=dd_anchor,
            permute_labels=permute_labels,
        )

    def default_combiner(self, mode: Literal["dd", "df"]) -> GradientCombiner:
        """MGDA with the paper's alpha_u bounds for the mode (Eq. 26 clipping)."""
        return MGDA(
            bounds=self.df_bounds if mode == "df" else self.dd_bounds, normalize=self.normalize
        )

    def prepare_model(self, task: RepresentationTask) -> None:
        super().prepare_model(task)
        if self.final_erasure or self.final_transport:
            # Where the final erasure writes (None for table backbones: the table itself). Not
            # trained: with target 'parameters' the optimiser holds the user-side parameters.
            task.enable_representation_offset()

    def trainable_parameters(self, task: RepresentationTask) -> list[torch.nn.Parameter]:
        params = super().trainable_parameters(task)
        offset = task.representation_offset
        if (
            (self.final_erasure or self.final_transport)
            and self.target == "parameters"
            and offset is not None
        ):
            # The offset only receives the final erasure; the backbones list it among their
            # user-side parameters, so leave it out of the optimiser explicitly.
            params = [p for p in params if p is not offset]
        return params

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs ModelCheckpoint after every other callback: the erased representation
        # is what the last epoch's checkpoint holds.
        if not (self.final_erasure or self.final_transport) or self.one_shot_done:
            return
        # Once, after the last epoch: the shrink 1 - sqrt(lambda_null / lambda) is calibrated
        # against the signal's noise once; erasing again (every k epochs) shrinks the estimate
        # towards the null each time, which is exact removal by instalments and inverts
        # (measured: every 10 epochs, gender 5-fold logistic leakage +0.38 above the null).
        if trainer.current_epoch + 1 < (trainer.max_epochs or 0) and not trainer.should_stop:
            return
        assert isinstance(pl_module, RepresentationTask)
        steps = [self._final_transport, self._final_erasure]
        if self.transport_order == "after_erasure":
            steps.reverse()
        with torch.no_grad():
            for step in steps:
                step(pl_module)
        self.one_shot_done = True

    def _final_transport(self, task: RepresentationTask) -> None:
        """The relabelling transport of :attr:`privacy_attributes` (``final_transport``)."""
        if not self.final_transport:
            return
        rep = audited_representation(task)
        # Its own stream: the erasure's permutations stay what they were without it.
        gen = torch.Generator().manual_seed(self._subset_seed * 7_919 + 17)
        privacy = self._privacy_codes()
        shift, self.transport_results = transport_attributes(
            rep,
            privacy,
            {n: self._num_classes[n] for n in privacy},
            shrinkage=self.transport_shrinkage,
            moments=self.transport_moments,
            rank_tol=self.transport_rank_tol,
            generator=gen,
        )
        add_representation_shift(task, shift.to(rep.dtype))

    def _final_erasure(self, task: RepresentationTask) -> None:
        """The null-calibrated erasure of every attribute's class means (``final_erasure``)."""
        if not self.final_erasure:
            return
        rep = audited_representation(task)
        gen = torch.Generator().manual_seed(self._subset_seed)
        shift, self.erasure_results = erase_attributes(
            rep,
            self._codes,
            self._num_classes,
            permutations=self.erasure_permutations,
            calibration=self.erasure_calibration,
            expand=self.erasure_expand,
            generator=gen,
        )
        add_representation_shift(task, shift.to(rep.dtype))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.privacy_attributes is not None:
            unknown = [a for a in self.privacy_attributes if a not in self._codes]
            if unknown:
                raise KeyError(
                    f"privacy_attributes {unknown} are not among the attributes to forget "
                    f"{sorted(self._codes)}"
                )

    def _privacy_codes(self) -> dict[str, Tensor]:
        """The codes the optimised privacy term sees (:attr:`privacy_attributes`)."""
        if self.privacy_attributes is None:
            return self._codes
        return {n: c for n, c in self._codes.items() if n in self.privacy_attributes}

    def _permutations(self, name: str, codes: Tensor, count: int) -> Tensor:
        """``count`` permutations of the attribute's labelled users, drawn once from the run's
        seed and the attribute's name: the same on every rank, step and resume."""
        perms = self._null_permutations.get(name)
        labelled = int((codes >= 0).sum())
        if perms is None or perms.shape != (count, labelled):
            gen = torch.Generator().manual_seed(
                self._subset_seed * 1_000_003 + zlib.crc32(name.encode())
            )
            perms = torch.stack([torch.randperm(labelled, generator=gen) for _ in range(count)])
            self._null_permutations[name] = perms
        return perms

    def _covariance_term(self, representation: Tensor, name: str, codes: Tensor) -> Tensor:
        """One attribute's covariance bound, floored at its permutation null when
        :attr:`covariance_null` is set (the permutations drawn once from the run's seed and
        the attribute's name: the same on every rank, step and resume)."""
        dtype = torch.float64 if self.precision == "float64" else torch.float32
        if not self.covariance_null:
            return gaussian_covariance_bound(
                representation,
                codes,
                self._num_classes[name],
                shrinkage=self.shrinkage,
                dtype=dtype,
                name=name,
            )
        perms = self._permutations(name, codes, self.covariance_null)
        banded = (
            spectral_covariance_band
            if self.covariance_band == "spectrum"
            else calibrated_covariance_bound
        )
        return banded(
            representation,
            codes,
            self._num_classes[name],
            perms,
            shrinkage=self.shrinkage,
            dtype=dtype,
            name=name,
        )

    def training_step(
        self, task: RepresentationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        self._step = int(task.global_step)  # the same on every rank, and restored on resume
        return super().training_step(task, batch, batch_idx)

    def _crossfit_term(self, representation: Tensor, name: str, codes: Tensor) -> Tensor:
        """One attribute's cross-fitted second-moment agreement, its splits drawn from the run's
        seed, the step and the attribute's name (the same on every rank and on resume)."""
        gen = torch.Generator().manual_seed(
            (self._subset_seed * 1_000_003 + self._step * 7_919 + zlib.crc32(name.encode()))
            % (2**63)
        )
        loss, _ = crossfit_covariance_loss(
            representation,
            codes,
            self._num_classes[name],
            gen,
            directions=self.crossfit_directions,
            parts=self.crossfit_parts,
            splits=self.crossfit_splits,
            dtype=torch.float64 if self.precision == "float64" else torch.float32,
        )
        return loss

    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        codes_by_name = self._privacy_codes()
        if self.privacy_moments == "crossfit":
            per = {
                name: self._crossfit_term(representation, name, codes)
                for name, codes in codes_by_name.items()
            }
            return torch.stack(list(per.values())).mean(), per
        if self.privacy_moments == "covariance":
            per = {
                name: self._covariance_term(representation, name, codes)
                for name, codes in codes_by_name.items()
            }
            return torch.stack(list(per.values())).mean(), per
        return multi_attribute_mi_bound(
            representation,
            codes_by_name,
            {n: self._num_classes[n] for n in codes_by_name},
            shrinkage=self.shrinkage,
            dtype=torch.float64 if self.precision == "float64" else torch.float32,
        )
