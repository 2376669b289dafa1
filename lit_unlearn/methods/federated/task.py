"""The LightningModule of user-level federated recommendation: one training step = one round.

Thin glue over :class:`~.engine.InProcessEngine`: ``setup`` groups the DataModule's training
split by user into the clients' data and builds the engine; each training step runs one round
(sampling, local training, upload, aggregation); evaluation, audits and the unlearning contract
are :class:`~lit_unlearn.tasks.RecommenderTask`'s, on the global model plus every client's
private rows (the view of an evaluator that can query each client's model).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_unlearn.datamodules.federated import FederatedData
from lit_unlearn.methods.federated.clients import ClientData
from lit_unlearn.methods.federated.engine import ClientTransform, InProcessEngine, UploadHook
from lit_unlearn.methods.federated.erasure import (
    ErasurePlan,
    FederatedErasure,
    apply_user_shift,
)
from lit_unlearn.methods.federated.objectives import ClientTerm, LocalLoss, PointwiseBCE
from lit_unlearn.methods.federated.strategy import Aggregator
from lit_unlearn.models.base import Recommender
from lit_unlearn.tasks.recommendation import RecommenderTask
from lit_unlearn.validation import check_count, check_positive

__all__ = ["FederatedTask"]

_STATE_KEY = "lit_unlearn_federated"
_ERASED_KEY = "lit_unlearn_federated_erased"


class FederatedTask(RecommenderTask):
    """Train a backbone by user-level federated learning, in process, a round per step.

    Args:
        model: The backbone (``NCF`` with ``scorer: neumf`` = FedNCF, ``MultVAE`` = FedVAE,
            ``FedRAP``); its per-user tables stay on the clients.
        local_loss: The clients' objective (``PointwiseBCE`` for FedNCF/FedRAP,
            ``MultinomialELBO`` for FedVAE).
        terms: Extra local terms with shared parameters (FedAU2's adversary head).
        attribute: Attribute whose labels the clients hold (passed to ``terms``; the name of
            one of the DataModule's attributes; None: no labels).
        fraction: Share of users sampled per round (FedAU2: 0.1).
        local_epochs: Local passes per sampled client (FedAU2: 1).
        local_batch_size: Examples per local minibatch (None: whole client data, one step).
        lr: Client learning rate (FedAU2: 0.1 FedNCF, 0.01 FedVAE / FedRAP).
        optimizer: Client optimiser, ``sgd`` or ``adam`` (moments per client and round).
        private_lr: Learning rate of the client's private rows (its user embedding; None:
            ``lr``, which then applies to the shared side only).
        private_optimizer: Optimiser of the private rows (None: ``optimizer``). FedNCF's
            ML-100K config trains the shared side with SGD and the private rows with Adam.
        aggregator: Server strategy (default FedAvg weighted by interactions).
        seed: Seed of the rounds (sampling, negatives, shuffles, noise).
        ks: Cut-offs of HR / NDCG / Recall (FedAU2 reports 5, 10, 15, 20).
        transforms: Client-side changes of each client's result before upload (the APM
            baseline's parameter perturbation, :class:`~.apm.APMPerturbation`).
        final_erasure: Null-calibrated erasure of ``attribute`` from the clients' private
            representations after the last round, before the last checkpoint
            (:class:`~.erasure.FederatedErasure`; None: none). The erased model trains no
            further.
    """

    def __init__(
        self,
        model: Recommender,
        local_loss: LocalLoss | None = None,
        terms: list[ClientTerm] | None = None,
        attribute: str | None = None,
        fraction: float = 0.1,
        local_epochs: int = 1,
        local_batch_size: int | None = None,
        lr: float = 0.1,
        optimizer: Literal["sgd", "adam"] = "sgd",
        aggregator: Aggregator | None = None,
        seed: int = 0,
        ks: list[int] | None = None,
        transforms: list[ClientTransform] | None = None,
        final_erasure: FederatedErasure | None = None,
        private_lr: float | None = None,
        private_optimizer: Literal["sgd", "adam"] | None = None,
    ) -> None:
        # Checked here too (the engine checks again when built at fit start): a bad config
        # fails when it is parsed, not after the data is loaded.
        check_positive("fraction", fraction)
        if fraction > 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        check_count("local_epochs", local_epochs)
        if private_lr is not None:
            check_positive("private_lr", private_lr)
        super().__init__(
            model=model, loss="bce", lr=lr, ks=ks if ks is not None else [5, 10, 15, 20]
        )
        self.save_hyperparameters(
            ignore=None
            if _given_hyperparameters.get() is not None
            else ["model", "local_loss", "terms", "aggregator", "transforms", "final_erasure"]
        )
        if final_erasure is not None and attribute is None:
            raise ValueError("final_erasure erases `attribute`: name it (e.g. attribute: gender)")
        self.local_loss = local_loss if local_loss is not None else PointwiseBCE()
        self.local_loss.check_model(model)
        self.terms = torch.nn.ModuleList(terms or [])
        self.attribute = attribute
        self.fraction = fraction
        self.local_epochs = local_epochs
        self.local_batch_size = local_batch_size
        self.client_lr = lr
        self.client_optimizer = optimizer
        self.private_lr = private_lr
        self.private_optimizer = private_optimizer
        self.aggregator = aggregator
        self.transforms = list(transforms or [])
        self.final_erasure = final_erasure
        self.erased = False
        self.erasure_plan: ErasurePlan | None = None  # what the last erasure did (this fit)
        self._attribute_classes = 0  # set with the labels when the engine is built
        self.seed = seed
        self.engine: InProcessEngine | None = None
        self._pending_engine_state: dict[str, Any] | None = None
        self._upload_hooks: list[UploadHook] = []

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        dm = self._trainer.datamodule if self._trainer is not None else None  # type: ignore[attr-defined]
        if not isinstance(dm, FederatedData):
            raise TypeError(
                f"FederatedTask trains on a FederatedData DataModule, got {type(dm).__name__}"
            )
        if self.trainer.world_size > 1:
            raise ValueError(
                "FederatedTask runs its clients in one process (the in-process engine batches "
                "them); for several machines use the Flower engine (lit_unlearn.methods."
                "federated.flower), not DDP"
            )
        self.build_engine(dm)

    def build_engine(self, dm: FederatedData) -> InProcessEngine:
        """Group the DataModule's training split by client and build the engine."""
        data = ClientData.from_pairs(dm.client_pairs(), self.model.num_users, self.model.num_items)
        labels = None
        if self.attribute is not None:
            attrs = dm.user_attributes
            if self.attribute not in attrs.names:
                raise ValueError(
                    f"attribute {self.attribute!r} is not among the DataModule's attributes "
                    f"{list(attrs.names)}"
                )
            labels = attrs.codes[self.attribute]
            classes = len(attrs.classes[self.attribute])
            self._attribute_classes = classes
            for k, term in enumerate(self.terms):
                head_classes = getattr(getattr(term, "head", None), "num_classes", None)
                if head_classes is not None and head_classes != classes:
                    raise ValueError(
                        f"terms[{k}]'s head predicts {head_classes} classes, attribute "
                        f"{self.attribute!r} has {classes} ({list(attrs.classes[self.attribute])})"
                        ": set its num_classes"
                    )
        self.engine = InProcessEngine(
            self.model,
            self.local_loss,
            data,
            labels=labels,
            terms=list(self.terms),  # type: ignore[arg-type]
            transforms=self.transforms,
            **self.engine_settings(),
        )
        self.engine.upload_hooks.extend(self._upload_hooks)
        if self._pending_engine_state is not None:
            self.engine.load_state_dict(self._pending_engine_state)
            self._pending_engine_state = None
        return self.engine

    def engine_settings(self) -> dict[str, Any]:
        """The engine's round and client-optimiser settings, as :meth:`build_engine` passes them.

        One place for them, so that code building its own engine from this task (the Table 3
        benchmark, ``benchmarks/fedau2_overhead.py``) runs the same clients: sampling fraction,
        local epochs and batch, the shared side's and the private rows' optimisers, the server
        strategy and the seed.
        """
        return {
            "fraction": self.fraction,
            "local_epochs": self.local_epochs,
            "local_batch_size": self.local_batch_size,
            "lr": self.client_lr,
            "optimizer": self.client_optimizer,
            "aggregator": self.aggregator,
            "seed": self.seed,
            "private_lr": self.private_lr,
            "private_optimizer": self.private_optimizer,
        }

    def add_upload_hook(self, hook: UploadHook) -> None:
        """Record the clients' uploads (an honest-but-curious server's view) every round."""
        self._upload_hooks.append(hook)
        if self.engine is not None:
            self.engine.upload_hooks.append(hook)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> Any:
        if self.unlearning is not None:
            return self.unlearning.configure_optimizer(self)
        # The engine steps the clients and the server itself. This optimiser never changes a
        # weight (no parameter has a gradient, lr 0); stepping it once per round makes
        # trainer.global_step count rounds, which ModelCheckpoint and the loggers key on
        # (without it every periodic checkpoint after the first was skipped as a duplicate).
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.unlearning is not None:
            return self.unlearning.training_step(self, batch, batch_idx)
        if self.engine is None:
            raise RuntimeError("FederatedTask: no engine; fit with a FederatedData DataModule")
        if self.erased:
            raise RuntimeError(
                "this model's attribute was erased after its last round (final_erasure); it "
                "trains no further: resume from a checkpoint before the erasure or start anew"
            )
        result = self.engine.run_round()
        clock = self.optimizers()
        assert isinstance(clock, LightningOptimizer)
        clock.step()  # advances trainer.global_step: one step per round
        loss = torch.tensor(result.loss)
        self.track_loss("train/loss", loss, batch_size=1)
        self.log("train/round", float(result.round_index + 1), on_step=True, on_epoch=False)
        if self.final_erasure is not None and self.rounds_done >= self._planned_rounds():
            self.erase()
        return loss

    def _planned_rounds(self) -> float:
        """Rounds this fit runs (one training step each; inf when unbounded)."""
        return float(self.trainer.estimated_stepping_batches)

    def erase(
        self, erasure: FederatedErasure | None = None, attribute: str | None = None
    ) -> ErasurePlan:
        """Erase an attribute now: plan from the clients' sums, apply on the clients.

        Args:
            erasure: The protocol to run (default :attr:`final_erasure`; a trained model is
                erased post hoc by :class:`~.unlearn.FederatedErasureUnlearning` with its own).
            attribute: The attribute to erase (default :attr:`attribute`, the labels the
                clients train with). Another of the DataModule's attributes erases what the
                clients hold of it: a model trained against gender (or against nothing, as
                the Original) erased for age.

        Returns:
            The plan (also kept as :attr:`erasure_plan`).

        Raises:
            RuntimeError: No erasure, no engine or no labels, or the model is erased already
                (a second plan on the erased rows would shrink the remaining deviation again).
            ValueError: ``attribute`` is not one of the DataModule's attributes.
        """
        erasure = erasure if erasure is not None else self.final_erasure
        target = attribute if attribute is not None else self.attribute
        if erasure is None or self.engine is None or target is None:
            raise RuntimeError("erase() needs an erasure, an engine and the clients' labels")
        if self.erased:
            raise RuntimeError(
                "this model was erased already (one erasure a model: a second plan on the "
                "erased rows would shrink what is left again)"
            )
        codes, num_classes = self._labels_of(target)
        # The representation as audited and as the clients would compute it for their sums:
        # eval mode. In the training step the model is in train mode, where FedVAE's encoder
        # drops half its input: planned on those rows, the class means were noisier, the null
        # larger and the shrink too small (the shift itself is exact either way).
        rep = self.user_representation()
        plan = erasure.plan(rep, codes, num_classes)
        shift = erasure.shifts(plan, codes)
        apply_user_shift(self.model, shift)
        self.erased = True
        self.erasure_plan = plan
        self.log_dict(
            {
                "erasure/rank": float(plan.rank),
                "erasure/shrink": float(plan.shrink[0]) if plan.rank else 0.0,
                "erasure/mean_squared_shift": float(shift.square().sum(1).mean()),
                "erasure/ridge": plan.ridge,
            },
            on_step=True,
            on_epoch=False,
        )
        return plan

    def _labels_of(self, attribute: str) -> tuple[Tensor, int]:
        """``[U]`` the clients' codes of ``attribute`` (-1 unknown) and its class count."""
        if attribute == self.attribute and self.engine is not None:
            if self.engine.labels is None:
                raise RuntimeError("erase() needs an erasure, an engine and the clients' labels")
            return self.engine.labels, self._attribute_classes
        dm = self._trainer.datamodule if self._trainer is not None else None  # type: ignore[attr-defined]
        if not isinstance(dm, FederatedData):
            raise RuntimeError(f"erasing {attribute!r} needs the FederatedData DataModule")
        attrs = dm.user_attributes
        if attribute not in attrs.names:
            raise ValueError(
                f"attribute {attribute!r} is not among the DataModule's attributes "
                f"{list(attrs.names)}"
            )
        return attrs.codes[attribute], len(attrs.classes[attribute])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # The checkpoint of a resumed fit is restored by now. A fit resumed after its last
        # round runs no training step, so final_erasure would silently not run.
        if (
            self.final_erasure is not None
            and self.unlearning is None
            and not self.erased
            and self.rounds_done > 0
            and self.rounds_done >= self._planned_rounds()
        ):
            raise ValueError(
                f"this fit resumes a model that has run all its {self.rounds_done} rounds: "
                "final_erasure runs after a fit's last round, so nothing would be erased. To "
                "erase a trained model use the FederatedErasureUnlearning callback "
                "(configs/method/federated/erase_trained.yaml)"
            )

    @property
    def rounds_done(self) -> int:
        """Rounds run so far (restored on resume)."""
        return self.engine.round_index if self.engine is not None else 0

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.engine is not None:
            checkpoint[_STATE_KEY] = self.engine.state_dict()
        checkpoint[_ERASED_KEY] = self.erased

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # refuses other data or another model first
        self.erased = bool(checkpoint.get(_ERASED_KEY, False))
        state = checkpoint.get(_STATE_KEY)
        if state is not None:
            self.load_engine_state(state)

    def load_engine_state(self, state: dict[str, Any]) -> None:
        """Restore the engine's rounds, client states and RNG (now, or when it is built)."""
        if self.engine is not None:
            self.engine.load_state_dict(state)
        else:
            self._pending_engine_state = state
