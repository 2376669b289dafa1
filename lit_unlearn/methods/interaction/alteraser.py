"""AltEraser: alternating block unlearning with a 2nd-order solver per block (paper 003).

Algorithm 1 of Liu et al.: start from the trained model (warm start), then

1. one erase pass over the users and items that occur in the forgetting data ``D_f``;
2. passes over every user and item of the remaining data ``D_r`` until a stopping criterion.

An erase pass updates the user rows with the items and ``h`` fixed, then the item rows with the
users fixed, each block minimising ``L_{D_r}`` with a :class:`~lit_unlearn.optim.BlockSolver`
(AdamW, HF-Newton or AH-Newton). The stopping criterion here is the relative decrease of the
whole objective ``L_{D_r}`` between passes (``tol``), or ``max_passes``.

``extrapolate`` adds a line-search extrapolation after every pass over all rows (an extension,
not in the paper; the "enhanced line search" that accelerates ALS for tensor factorisation,
Rajih, Comon and Harshman, SIAM J. Matrix Anal. Appl. 2008): from the previous iterate
``theta_{k-1}`` and the pass result ``theta_k`` it tries ``theta_k + beta (theta_k - theta_{k-1})``
and keeps it if ``L_{D_r}`` is lower, growing ``beta`` after a success and halving it after a
failure. Alternating updates crawl along directions that couple the two sides (a forgetting
user and the items they touched move together); the extrapolation takes several such passes at
once for the price of one objective evaluation.

Every Lightning training step is one erase pass (the batch is not used: a pass works on the
whole of ``D_r``, which the callback takes from the DataModule). Under DDP the rows of a block
are sharded over ranks and gathered, for the row-separable solvers (AH-Newton, AdamW); a
Hessian-free solve couples rows through its CG and line search, so every rank solves the whole
block and all ranks agree.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lit_unlearn._structural import missing_members
from lit_unlearn.datamodules.protocols import ForgettingRequestData, require_data
from lit_unlearn.methods.interaction.block_problem import RowBlock
from lit_unlearn.optim.block_solvers import AHNewtonBlock, BlockSolver
from lit_unlearn.tasks.recommendation import RecommenderTask
from lit_unlearn.unlearning.base import UnlearningCallback


class WholeDataBackbone(Protocol):
    """What AltEraser needs of a backbone: two embedding tables, ``h`` and a closed-form loss.

    ENMF (:class:`~lit_unlearn.models.ENMF`) is one; any backbone scoring
    ``h^T (p_u * q_v)`` with the ENMF weighted least squares can be erased the same way.
    """

    user_embedding: nn.Embedding
    item_embedding: nn.Embedding
    h: Tensor
    negative_weight: float
    reg: float

    def objective(self, pairs: Tensor) -> Tensor: ...


class AltEraser(UnlearningCallback[RecommenderTask]):
    """Alternating eraser over user and item embeddings of an ENMF model.

    Args:
        checkpoint: The trained (original) model.
        solver: Block solver (default :class:`~lit_unlearn.optim.AHNewtonBlock`).
        max_passes: Erase passes at most, the forgetting pass included.
        tol: Stop once a pass over all rows lowers ``L_{D_r}`` by less than ``tol * |L|``.
        forget_pass: Start with the pass over the forgetting users/items (Algorithm 1, l. 5-6).
        extrapolate: Line-search extrapolation after each pass over all rows (module docstring).
        max_step: Largest extrapolation factor ``beta``.
    """

    task_kind = RecommenderTask

    def __init__(
        self,
        checkpoint: str | None = None,
        solver: BlockSolver | None = None,
        max_passes: int = 20,
        tol: float = 1e-3,
        forget_pass: bool = True,
        extrapolate: bool = False,
        max_step: float = 20.0,
    ) -> None:
        super().__init__(checkpoint=checkpoint)
        if isinstance(max_passes, bool) or not isinstance(max_passes, int) or max_passes < 1:
            raise ValueError(f"max_passes must be a positive int, got {max_passes!r}")
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite float >= 0, got {tol}")
        self.solver = solver if solver is not None else AHNewtonBlock()
        self.max_passes = max_passes
        self.tol = tol
        if not (math.isfinite(max_step) and max_step >= 1.0):
            raise ValueError(f"max_step must be a finite float >= 1, got {max_step}")
        self.forget_pass = forget_pass
        self.extrapolate = extrapolate
        self.max_step = max_step
        self.step_size = 1.0
        self.accepted_steps = 0
        self._previous: tuple[Tensor, Tensor] | None = None
        self.passes = 0
        self.history: list[float] = []
        self.pass_seconds: list[float] = []
        self._remaining: Tensor | None = None
        self._forget: Tensor | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        assert isinstance(pl_module, RecommenderTask)
        missing = missing_members(pl_module.model, WholeDataBackbone)
        if missing:
            raise TypeError(
                f"AltEraser needs a whole-data backbone with a closed-form block loss (ENMF), "
                f"got {type(pl_module.model).__name__} (no {missing})"
            )
        dm: ForgettingRequestData = require_data(
            getattr(trainer, "datamodule", None),
            ForgettingRequestData,
            "AltEraser (a forgetting request, e.g. ForgettingData)",
        )
        if dm.train_on != "remaining":
            raise ValueError(
                "AltEraser unlearns towards the remaining data: set the DataModule's train_on to "
                "'remaining' (its evaluation then excludes D_r, like Retrain's)"
            )
        self._remaining = dm.remaining_pairs
        self._forget = dm.forget_pairs
        self.passes = 0
        self.history = []
        self.pass_seconds = []
        self.step_size = 1.0
        self.accepted_steps = 0
        self._previous = None

    def trainable_parameters(self, task: RecommenderTask) -> list[torch.nn.Parameter]:
        """User and item embeddings (``h`` and any other parameter stay fixed, as in the paper)."""
        model: Any = task.model
        return [model.user_embedding.weight, model.item_embedding.weight]

    def configure_optimizer(self, task: RecommenderTask) -> torch.optim.Optimizer | None:
        """A clock, not an optimiser: SGD at learning rate 0, stepped once per pass.

        The block solvers own their updates (and any optimiser state) per block, so no
        parameter ever has a gradient and this step changes no weight. Stepping it makes
        ``trainer.global_step`` count passes: ModelCheckpoint skips every save at an unchanged
        ``global_step``, so without it a run saved no checkpoint at all and a killed run had
        nothing to resume from.
        """
        return torch.optim.SGD(self.trainable_parameters(task), lr=0.0)

    # ------------------------------------------------------------------ one erase pass
    @staticmethod
    def _block(model: Any, other: Tensor, rows: Tensor, pairs: Tensor) -> RowBlock:
        """The block problem of ``rows``: the backbone's expected loss (dropout marginalised)."""
        dropout = float(getattr(model, "dropout", 0.0))
        return RowBlock(other, model.h, rows, pairs, model.negative_weight, model.reg, dropout)

    def _solve(
        self, task: RecommenderTask, other: Tensor, rows: Tensor, pairs: Tensor, side: Tensor
    ) -> Tensor:
        model: Any = task.model
        world = self.world_size
        if world == 1 or not getattr(self.solver, "separable", False):
            block = self._block(model, other, rows, pairs)
            return self.solver.solve(block, side[rows])
        chunks = torch.tensor_split(rows, world)
        mine = chunks[task.global_rank]
        block = self._block(model, other, mine, pairs)
        solved = self.solver.solve(block, side[mine])
        size = max(c.numel() for c in chunks)
        padded = torch.zeros(size, side.shape[1], dtype=side.dtype, device=side.device)
        padded[: solved.shape[0]] = solved
        gathered = task.all_gather(padded)
        assert isinstance(gathered, Tensor)
        return torch.cat([gathered[r, : chunks[r].numel()] for r in range(world)])

    def training_step(
        self, task: RecommenderTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        assert self._remaining is not None and self._forget is not None
        model: Any = task.model
        device = model.user_embedding.weight.device
        remaining = self._remaining.to(device)
        first = self.passes == 0 and self.forget_pass
        source = self._forget.to(device) if first else remaining
        users, items = torch.unique(source[:, 0]), torch.unique(source[:, 1])
        start = time.perf_counter()
        with torch.no_grad():
            p = model.user_embedding.weight
            q = model.item_embedding.weight
            p[users] = self._solve(task, q, users, remaining, p)
            q[items] = self._solve(task, p, items, remaining.flip(1), q)
            objective = model.objective(remaining)
            if self.extrapolate and not first:
                if self._previous is not None:
                    objective = self._extrapolate(model, remaining, objective)
                self._previous = (p.clone(), q.clone())
        self.pass_seconds.append(time.perf_counter() - start)
        if not torch.isfinite(objective):
            raise FloatingPointError(
                f"AltEraser pass {self.passes} produced a non-finite objective {float(objective)}"
            )
        clock = task.optimizers()
        assert isinstance(clock, LightningOptimizer)
        clock.step()  # advances trainer.global_step: one step per pass (no weight changes)
        value = float(objective)
        previous = self.history[-1] if self.history else None
        self.history.append(value)
        self.passes += 1
        converged = (
            previous is not None and not first and (previous - value) <= self.tol * abs(previous)
        )
        if converged or self.passes >= self.max_passes:
            task.trainer.should_stop = True
        task.log("alteraser/objective", objective, on_step=True, on_epoch=False)
        task.log("alteraser/passes", float(self.passes), on_step=True, on_epoch=False)
        if self.extrapolate:
            task.log("alteraser/step_size", self.step_size, on_step=True, on_epoch=False)
        return objective.detach()

    def _extrapolate(self, model: Any, remaining: Tensor, objective: Tensor) -> Tensor:
        """Try ``theta + beta (theta - theta_prev)``; keep it if ``L_{D_r}`` drops.

        Every rank holds the same tables and data, so every rank takes the same decision.
        """
        assert self._previous is not None
        p, q = model.user_embedding.weight, model.item_embedding.weight
        current = (p.clone(), q.clone())
        p.add_(current[0] - self._previous[0], alpha=self.step_size)
        q.add_(current[1] - self._previous[1], alpha=self.step_size)
        trial = model.objective(remaining)
        if torch.isfinite(trial) and trial < objective:
            self.accepted_steps += 1
            self.step_size = min(1.5 * self.step_size, self.max_step)
            return trial
        p.copy_(current[0])
        q.copy_(current[1])
        self.step_size = max(0.5 * self.step_size, 0.5)
        return objective

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "passes": self.passes,
            "history": list(self.history),
            "step_size": self.step_size,
            "accepted_steps": self.accepted_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.passes = int(state_dict.get("passes", 0))
        self.history = list(state_dict.get("history", []))
        self.step_size = float(state_dict.get("step_size", 1.0))
        self.accepted_steps = int(state_dict.get("accepted_steps", 0))
