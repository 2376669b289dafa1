"""The LightningModule that trains and evaluates any recommender backbone.

Thin glue: the math lives in :mod:`lit_unlearn.models` (backbones), :mod:`.losses` and
:mod:`lit_unlearn.metrics`; this module samples negatives, steps Adam and routes evaluation
batches to the metric of their protocol.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_unlearn.datamodules.protocols import InteractionData, conforms
from lit_unlearn.datamodules.sampling import (
    DENSE_SEEN_MAX_CELLS,
    dense_seen_mask,
    interaction_keys,
    training_negatives,
)
from lit_unlearn.metrics.ranking import (
    metrics_from_hits,
    metrics_from_ranks,
    sampled_ranks,
    topk_hits,
)
from lit_unlearn.metrics.ranking_metric import RankingMetrics
from lit_unlearn.models.base import Recommender
from lit_unlearn.tasks.loss_tracking import EpochLossTracking
from lit_unlearn.tasks.losses import LOSSES
from lit_unlearn.unlearning.contract import RepresentationTask, UnlearningStep
from lit_unlearn.validation import check_count, check_finite

Stage = Literal["val", "test"]


class RecommenderTask(EpochLossTracking, RepresentationTask):
    """Train a recommender with BPR or BCE on sampled negatives, evaluate both ranking protocols.

    Args:
        model: The backbone (``MF``, ``NCF``, ``LightGCN``...). Under the CLI its ``num_users``
            and ``num_items`` are linked from the DataModule.
        loss: ``bpr`` (pairwise, Rendle et al. 2009), ``bce`` (pointwise, He et al. 2017) or
            ``nonsampling`` (the backbone's whole-data loss, e.g. ENMF: no negatives sampled).
        num_negatives: Negatives sampled uniformly per positive and step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay over all parameters.
        l2_reg: Coefficient of the batch embedding L2 penalty (LightGCN Eq. 15 style), applied
            only to the embeddings a batch touches.
            Ignored by ``nonsampling`` (the backbone's loss carries its own L2 term).
        ks: Cut-offs of HR/NDCG/Recall.
        reject_seen_negatives: Resample negatives that are training positives of the user
            (one vectorised pass; the rare second collision is kept, as in most BPR code).
        optimizer: ``adam`` or ``adamw`` (decoupled weight decay; AltEraser's 1st-order choice).
    """

    model: Recommender

    def __init__(
        self,
        model: Recommender,
        loss: Literal["bpr", "bce", "nonsampling"] = "bpr",
        num_negatives: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        l2_reg: float = 0.0,
        ks: list[int] | None = None,
        reject_seen_negatives: bool = True,
        optimizer: Literal["adam", "adamw"] = "adam",
    ) -> None:
        super().__init__()
        if loss not in (*LOSSES, "nonsampling"):
            raise ValueError(
                f"loss must be one of {[*sorted(LOSSES), 'nonsampling']}, got {loss!r}"
            )
        if loss == "nonsampling" and not hasattr(model, "batch_loss"):
            raise ValueError(
                f"loss 'nonsampling' needs a whole-data backbone such as ENMF, got "
                f"{type(model).__name__}"
            )
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        check_count("num_negatives", num_negatives)
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("l2_reg", l2_reg)):
            check_finite(name, value)  # `lr <= 0` alone lets NaN through
        if lr <= 0 or weight_decay < 0 or l2_reg < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, l2_reg >= 0; got {lr}, {weight_decay}, {l2_reg}"
            )
        # Under LightningCLI the hparams are the parsed config (the backbone as class_path +
        # init_args), so load_from_checkpoint rebuilds everything. Outside the CLI the backbone
        # is a live module: don't pickle it into hparams; pass ``model=`` when loading instead.
        self.save_hyperparameters(
            ignore=None if _given_hyperparameters.get() is not None else ["model"]
        )
        self.model = model
        self.loss_name = loss
        self.loss_fn = LOSSES.get(loss, LOSSES["bpr"])
        self.optimizer_name = optimizer
        self.num_negatives = num_negatives
        self.lr = lr
        self.weight_decay = weight_decay
        self.l2_reg = l2_reg
        self.ks = sorted(ks) if ks is not None else [5, 10, 20, 50]
        self.reject_seen_negatives = reject_seen_negatives
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{protocol}": RankingMetrics(self.ks, prefix=f"{stage}/{protocol}/")
                for stage in ("val", "test")
                for protocol in ("full", "sampled")
            }
        )
        # Data, not state: filled from the DataModule in setup(), never saved in checkpoints.
        self.register_buffer("graph", torch.empty(2, 0, dtype=torch.long), persistent=False)
        self.register_buffer("train_keys", torch.empty(0, dtype=torch.long), persistent=False)
        # The same pairs as a dense [U, I] mask when that is small (negative redraws by gather).
        self.register_buffer(
            "train_seen_mask", torch.empty(0, 0, dtype=torch.bool), persistent=False
        )
        self.register_buffer("user_degree", torch.empty(0, dtype=torch.long), persistent=False)
        self._protocols: dict[str, list[str]] = {"val": [], "test": []}
        self._epoch_loss: list = [torch.zeros(()), 0]
        self.automatic_optimization = False
        # Set by an unlearning callback in its setup(); it then owns the training step.
        self.unlearning: UnlearningStep | None = None
        self._regime_checked = False

    # ------------------------------------------------------------------ data hookup
    def setup(self, stage: str) -> None:
        dm = self._trainer.datamodule if self._trainer is not None else None  # type: ignore[attr-defined]
        if dm is None:
            return
        # Data-free DataModules (AttributeData only) serve no interactions and no evaluation.
        interactions = conforms(dm, InteractionData)
        if interactions and dm.mode == "data_dependent":
            self.attach_graph(dm.train_graph)
            self._check_regime()
        for s in ("val", "test"):
            self._protocols[s] = list(dm.eval_protocols(s)) if interactions else []

    def attach_graph(self, train_pairs: Tensor) -> None:
        """Use ``train_pairs`` (LongTensor [2, E] of user, item) as graph and positives set."""
        self.graph = train_pairs.to(self.device)
        num_users, num_items = self.model.num_users, self.model.num_items
        self.train_keys = interaction_keys(train_pairs[0], train_pairs[1], num_items).to(
            self.device
        )
        self.train_seen_mask = (
            dense_seen_mask(self.train_keys, num_users, num_items)
            if num_users * num_items <= DENSE_SEEN_MAX_CELLS
            else torch.empty(0, 0, dtype=torch.bool, device=self.device)
        )
        self.user_degree = torch.bincount(train_pairs[0], minlength=self.model.num_users).to(
            self.device
        )

    def _check_regime(self) -> None:
        """Warn (once per task) when the backbone was tuned for very different data (ENMF's
        MovieLens-tuned c0 on sparse data: :meth:`Recommender.data_regime_warning`)."""
        if self._regime_checked:
            return
        self._regime_checked = True
        warning = self.model.data_regime_warning(int(self.graph.shape[1]))
        if warning is not None:
            rank_zero_warn(str(warning), category=type(warning))

    @property
    def interaction_graph(self) -> Tensor | None:
        """The training pairs ``[2, E]`` as a graph, or None when no data is attached."""
        return self.graph if self.graph.numel() else None

    # ------------------------------------------------------------------ training
    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return self.model(users, items, graph=self.interaction_graph)

    def sample_negatives(self, users: Tensor) -> Tensor:
        """Uniform negatives ``[B, num_negatives]``, resampling training positives once."""
        if not self.reject_seen_negatives:
            seen = None
        elif self.train_seen_mask.numel():
            seen = self.train_seen_mask
        else:
            seen = self.train_keys
        return training_negatives(users, self.model.num_items, self.num_negatives, seen)

    def recommendation_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The training objective on a batch of (user, positive item) pairs (AttrCloak Eq. 20).

        Samples negatives, scores with the backbone and applies BPR/BCE plus the batch L2.

        Raises:
            FloatingPointError: The loss is NaN/inf (never silently stepped on).
        """
        users, pos = batch["user"], batch["item"]
        if self.loss_name == "nonsampling":
            loss = self._nonsampling_loss(users, pos)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss {loss.item()} at step {self.global_step}: lower "
                    "the learning rate or check the data"
                )
            return loss
        neg = self.sample_negatives(users)
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)
        scores = self.model(users, items, graph=self.interaction_graph)
        loss = self.loss_fn(scores[:, 0], scores[:, 1:])
        if self.l2_reg > 0:
            loss = loss + self.l2_reg * self.model.l2_batch(users, items.reshape(-1))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}: lower the "
                "learning rate or check the data"
            )
        return loss

    def _nonsampling_loss(self, users: Tensor, items: Tensor) -> Tensor:
        if self.user_degree.numel() == 0:
            raise RuntimeError(
                "the nonsampling loss needs the training pairs: attach a DataModule (or call "
                "attach_graph) before training"
            )
        batch_loss: Any = getattr(self.model, "batch_loss")  # noqa: B009 (not on Recommender)
        return cast(
            Tensor,
            batch_loss(users, items, self.user_degree[users], int(self.graph.shape[1])),
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.unlearning is not None:
            # An unlearning callback took over the step (its own objectives and combiner).
            return self.unlearning.training_step(self, batch, batch_idx)
        return self.recommendation_step(batch)

    def recommendation_step(self, batch: dict[str, Tensor]) -> Tensor:
        """One backward of the recommendation loss and one step of the configured optimiser.

        Manual optimisation, without the automatic loop's closure and per-step hook fan-out,
        which cost as much as a BPR-MF step at batch 512. Also the step of warm-start
        fine-tuning (its callback only swaps the optimiser).
        """
        loss = self.recommendation_loss(batch)
        opt = self.optimizers()
        assert isinstance(opt, LightningOptimizer)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        self.track_loss("train/loss", loss, batch_size=batch["user"].shape[0])
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_loss()

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        if self.unlearning is not None:
            return self.unlearning.configure_optimizer(self)
        optim = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return optim(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, stage: Stage, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        protocol = self._protocols[stage][dataloader_idx]
        metric = cast(RankingMetrics, self.metrics[f"{stage}_{protocol}"])
        if protocol == "full":
            scores = self.model.full_scores(batch["user"], graph=self.interaction_graph)
            hits = topk_hits(scores, batch["targets"], batch["exclude"], k=max(self.ks))
            values = metrics_from_hits(hits, batch["targets"].sum(dim=1), self.ks)
        else:
            users = batch["user"]
            items = torch.cat([batch["item"].unsqueeze(1), batch["negatives"]], dim=1)
            scores = self.model(users, items, graph=self.interaction_graph)
            values = metrics_from_ranks(sampled_ranks(scores[:, 0], scores[:, 1:]), self.ks)
        metric.update(values)

    def _eval_epoch_end(self, stage: Stage) -> None:
        for protocol in self._protocols[stage]:
            metric = cast(RankingMetrics, self.metrics[f"{stage}_{protocol}"])
            with warnings.catch_warnings():
                # A rank with no rows of a protocol still joins the sum-reduction: that's fine.
                warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
                values = metric.compute()
            self.log_dict(
                {k: v.float() for k, v in values.items()}, add_dataloader_idx=False, sync_dist=False
            )
            metric.reset()

    def validation_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ audits
    @torch.no_grad()
    def user_representation(self) -> Tensor:
        """The user vectors the model scores with (every user-side path), for attribute audits."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model.user_representation(graph=self.interaction_graph).detach()
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ unlearning contract
    def restore_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a trained model's weights (its checkpoint's ``state_dict``) to unlearn it."""
        if self.model.user_shift is not None and "model.user_shift" not in state_dict:
            # A shift left by an earlier unlearning fit in this process: the checkpoint has none.
            self.model.user_shift = None
        self.load_state_dict(state_dict)

    def task_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The recommendation loss on a batch (AttrCloak's Eq. 20 retention objective)."""
        return self.recommendation_loss(batch)

    def representation(self) -> Tensor:
        """Every user's representation, differentiable (all user-side paths of the backbone)."""
        return self.model.user_representation(graph=self.interaction_graph)

    def representation_parameters(self) -> list[nn.Parameter]:
        """User embeddings and user-side tower/propagation inputs (items and scorer excluded)."""
        return list(self.model.user_parameters())

    def enable_representation_offset(self) -> nn.Parameter | None:
        if self.model.representation_is_table:
            return None
        return self.model.enable_user_shift()

    @property
    def representation_offset(self) -> nn.Parameter | None:
        return self.model.user_shift

    @property
    def representation_needs_data(self) -> bool:
        return self.model.needs_graph

    @property
    def has_training_data(self) -> bool:
        return self.interaction_graph is not None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the data/model fingerprint
        checkpoint["lit_unlearn"] = {
            "num_users": self.model.num_users,
            "num_items": self.model.num_items,
        }
