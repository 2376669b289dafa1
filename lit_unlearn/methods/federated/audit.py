"""Audits of a federated run: the outside adversary's embedding attack every N rounds, and the
export of the user representations with raw dataset ids for anyone's own attacker.

FedAU2's external adversary (App. A.2) reads the user embeddings at any iteration and knows
the attributes of 20% of the users (the DataModule's shadow set): an MLP with one hidden layer
of 100 units trained on those, tested on the other 80%. Its micro-F1, macro-F1 and balanced
accuracy are reported (the paper's "F1" behaves like macro-F1: spec decision 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback

from lit_unlearn.attacks.audit import audit_embeddings, results_to_frame, results_to_markdown
from lit_unlearn.attacks.base import AttackResult
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.reporting.tracking import log_metrics

__all__ = ["EmbeddingAttack", "export_representations"]


def export_representations(path: str | Path, pl_module: Any, datamodule: Any) -> Path:
    """Write every user's representation with the dataset's raw user ids as ``.npz``.

    Keys: ``user_id`` (raw ids, strings), ``representation`` (``[U, d]`` float32) and one
    ``attr_<name>`` code array per attribute (``-1`` unknown) with ``classes_<name>``.
    """
    rep = pl_module.user_representation().float().cpu().numpy()
    index = datamodule.index
    attrs = datamodule.user_attributes
    extra: dict[str, np.ndarray] = {}
    for name in attrs.names:
        extra[f"attr_{name}"] = attrs.codes[name].cpu().numpy()
        extra[f"classes_{name}"] = np.asarray(attrs.classes[name], dtype=str)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra["user_id"] = np.asarray(index.user_ids, dtype=str)
    extra["representation"] = rep
    np.savez(out, **extra)  # type: ignore[arg-type]
    return out


class EmbeddingAttack(Callback):
    """FedAU2's embedding attacker on the user representations, every ``every_n_rounds``.

    Args:
        every_n_rounds: Attack after every this many rounds (and at the end of the fit).
        attributes: Attributes to attack (None: all of the DataModule's).
        hidden: Hidden width of the attacker MLP (FedAU2: 100, one hidden layer).
        seed: Seed of the attacker and its validation split.
        export: Write ``representations_round{r}.npz`` (raw user ids) at every attack.
        save_dir: Where tables and exports go (None: the trainer's log dir).

    Attributes:
        history: ``round -> list[AttackResult]`` (checkpointed, so a resumed run keeps it).
    """

    def __init__(
        self,
        every_n_rounds: int = 100,
        attributes: list[str] | None = None,
        hidden: int = 100,
        seed: int = 0,
        export: bool = True,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(every_n_rounds, bool) or not isinstance(every_n_rounds, int):
            raise ValueError(f"every_n_rounds must be an int >= 1, got {every_n_rounds!r}")
        if every_n_rounds < 1:
            raise ValueError(f"every_n_rounds must be >= 1, got {every_n_rounds}")
        self.every_n_rounds = every_n_rounds
        self.attributes = attributes
        self.hidden = hidden
        self.seed = seed
        self.export = export
        self.save_dir = save_dir
        self.history: dict[int, list[AttackResult]] = {}

    def _out_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.save_dir if self.save_dir is not None else (trainer.log_dir or "."))

    def attack(self, trainer: pl.Trainer, pl_module: Any, round_index: int) -> list[AttackResult]:
        """Run the attacker now and record, log and write the results as round ``round_index``."""
        dm = trainer.datamodule  # type: ignore[attr-defined]
        rep = pl_module.user_representation()
        attacker = MLPAttacker(hidden=self.hidden, layers=2, seed=self.seed)
        results = audit_embeddings(
            rep, dm.user_attributes, [attacker], names=self.attributes, seed=self.seed
        )
        self.history[round_index] = results
        if trainer.is_global_zero:
            metrics = {
                f"attack/{r.attribute}/{name}": float(getattr(r, name))
                for r in results
                for name in ("micro_f1", "macro_f1", "balanced_accuracy", "auc")
            }
            log_metrics(trainer.loggers, metrics, step=round_index)
            out = self._out_dir(trainer)
            out.mkdir(parents=True, exist_ok=True)
            frame = results_to_frame(results)
            frame.insert(0, "round", round_index)
            frame.to_csv(out / f"embedding_attack_round{round_index}.csv", index=False)
            (out / f"embedding_attack_round{round_index}.md").write_text(
                results_to_markdown(results) + "\n"
            )
            if self.export:
                export_representations(
                    out / f"representations_round{round_index}.npz", pl_module, dm
                )
        return results

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = pl_module.rounds_done
        if done % self.every_n_rounds == 0 and done not in self.history:
            self.attack(trainer, pl_module, done)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        done = pl_module.rounds_done
        if done not in self.history:
            self.attack(trainer, pl_module, done)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {r: [x.as_dict() for x in res] for r, res in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {
            int(r): [AttackResult.from_dict(x) for x in res]
            for r, res in state_dict.get("history", {}).items()
        }
