"""A Lightning Trainer with one more entry point: ``audit`` (attribute inference on a model).

LightningCLI turns every Trainer method listed in its ``subcommands`` into a subcommand, so
``lit-unlearn audit --config ... --ckpt_path model.ckpt`` runs the attackers on a saved model.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from lit_unlearn.datamodules.containers import UserAttributes


class UnlearnTrainer(pl.Trainer):
    """``lightning.pytorch.Trainer`` plus :meth:`audit`."""

    def audit(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        ckpt_path: str | None = None,
        attributes: list[str] | None = None,
        attackers: list[str] | None = None,
        seed: int = 0,
        output_dir: str | None = None,
    ) -> list[dict[str, object]]:
        """Attribute-inference audit of a (saved) model's user representation.

        Trains each attacker on the shadow users' representations and measures it on the rest;
        prints a table with accuracy, balanced accuracy, micro-F1, AUC, chance and majority
        baseline, logs it to the trainer's loggers and writes ``audit.md``/``audit.csv``.

        Args:
            model: The task (must provide ``user_representation()``).
            datamodule: Data providing ``user_attributes`` (data-free mode works).
            ckpt_path: Checkpoint whose weights are audited (None: the model as configured).
            attributes: Attributes to audit (default: all the data encodes).
            attackers: Attacker names, ``mlp`` and/or ``xgboost`` (default both).
            seed: Attacker seed.
            output_dir: Where tables go (default the logger's directory, else ``.``).

        Returns:
            One dict per (attribute, attacker).
        """
        from lit_unlearn.attacks.audit import (
            audit_embeddings,
            make_attacker,
            results_to_frame,
            results_to_markdown,
        )

        if ckpt_path is not None:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            model.load_state_dict(ckpt["state_dict"])
            dm_state = ckpt.get(type(datamodule).__qualname__)
        else:
            dm_state = None
        datamodule.setup("test")
        if dm_state:
            datamodule.load_state_dict(dm_state)  # refuses a different user order
        model.trainer = self  # lets the task find the datamodule's graph in setup
        self.datamodule = datamodule
        model.setup("test")
        attrs: UserAttributes = datamodule.user_attributes  # type: ignore[attr-defined]
        reps = model.user_representation()  # type: ignore[operator]
        chosen = [make_attacker(name, seed=seed) for name in (attackers or ["mlp", "xgboost"])]
        results = audit_embeddings(reps, attrs, attackers=chosen, names=attributes, seed=seed)
        table = results_to_markdown(results)
        print(table)
        out = Path(output_dir or (self.log_dir or "."))
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.md").write_text(table + "\n")
        results_to_frame(results).to_csv(out / "audit.csv", index=False)
        for logger in self.loggers:
            logger.log_metrics(
                {
                    f"audit/{r.attribute}/{r.attacker}/{k}": float(v)
                    for r in results
                    for k, v in r.as_dict().items()
                    if isinstance(v, float)
                },
                step=0,
            )
            logger.save()
        return [r.as_dict() for r in results]
