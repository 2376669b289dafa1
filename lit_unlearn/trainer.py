"""A Lightning Trainer with one more entry point: ``audit`` (what a saved model still reveals).

LightningCLI turns every Trainer method listed in its ``subcommands`` into a subcommand, so
``lit-unlearn audit --config ... --ckpt_path model.ckpt`` runs the attackers on a saved model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as pl

from lit_unlearn.fingerprint import check_checkpoint, read_checkpoint

if TYPE_CHECKING:
    from lit_unlearn.attacks.callback import AttributeAudit


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
        export: bool = True,
        protocols: list[str] | None = None,
        permutations: int = 20,
        folds: int = 5,
    ) -> list[dict[str, object]]:
        """Audit a (saved) model: attribute inference for recommenders, A_r/A_f/MIA for classifiers.

        A classifier task (one with ``predict_logits``) is audited by
        :class:`~lit_unlearn.attacks.class_audit.ClassAudit` at stage ``checkpoint``: A_r, A_f,
        per-class accuracy and, in data-dependent mode, the entropy MIA; the model outputs are
        exported as ``class_outputs_checkpoint.npz`` for outside audits (``attributes`` and
        ``attackers`` do not apply).

        A recommender: :class:`~lit_unlearn.attacks.callback.AttributeAudit` runs at stage
        ``checkpoint``: each attacker trains on the shadow users' representations and is
        measured on the rest; the table (accuracy, balanced accuracy, micro-F1, AUC, chance,
        majority baseline) is printed,
        logged as ``audit/checkpoint/{attribute}/{attacker}/{metric}`` and written as
        ``audit_checkpoint.md`` / ``.csv``. With ``export`` the audited representation and the
        labels are written as ``representations_checkpoint.npz`` / ``attributes_checkpoint.csv``
        (raw user ids, class names, shadow mask) for ``python -m lit_unlearn.attacks.leakage``.
        With ``protocols`` the same attackers are also run by
        :func:`~lit_unlearn.attacks.leakage.audit_leakage` (flip-aware leakage, method-aware
        attacker, permutation null) and written as ``leakage_checkpoint.md`` / ``.csv``; the
        returned rows are then those of both audits.

        Args:
            model: The task (``user_representation()`` or, classifiers, ``predict_logits``).
            datamodule: Data providing ``user_attributes`` (data-free mode works), or a
                ``ClassificationData``.
            ckpt_path: Checkpoint whose weights are audited (None: the model as configured).
            attributes: Attributes to audit (default: all the data encodes).
            attackers: Attacker names, ``mlp``, ``xgboost``, ``logreg``, ``knn`` (default
                ``mlp`` and ``xgboost``).
            seed: Attacker seed.
            output_dir: Where tables go (default the logger's directory, else ``.``).
            export: Write the representation and labels (recommenders).
            protocols: Leakage protocols to run too, ``shadow`` and/or ``kfold`` (default none).
            permutations: Label permutations of the leakage audit's null.
            folds: Folds of the ``kfold`` protocol.

        Returns:
            One dict per (attribute, attacker).
        """
        from lit_unlearn.attacks.callback import AttributeAudit

        if hasattr(model, "predict_logits"):
            return self._audit_classifier(model, datamodule, ckpt_path, seed, output_dir)
        datamodule.setup("test")  # before the checkpoint: its fingerprint is checked against it
        if ckpt_path is not None:
            ckpt = read_checkpoint(ckpt_path)
            check_checkpoint(ckpt, model, datamodule, ckpt_path)
            model.load_state_dict(ckpt["state_dict"])
            dm_state = ckpt.get(type(datamodule).__qualname__)
        else:
            dm_state = None
        if dm_state:
            datamodule.load_state_dict(dm_state)  # refuses a different user order
        model.trainer = self  # lets the task find the datamodule's graph in setup
        self.datamodule = datamodule
        model.setup("test")
        # The same callback that audits fit/test stages: one set of metric keys
        # (audit/checkpoint/...), one table format, one file naming (audit_checkpoint.md/.csv).
        out_dir = output_dir or (self.log_dir or ".")
        audit = AttributeAudit(
            attributes=attributes,
            attackers=attackers or ["mlp", "xgboost"],
            seed=seed,
            save_dir=out_dir,
            verbose=True,
            export=export,
        )
        results = audit.run(self, model, stage="checkpoint")
        rows: list[dict[str, object]] = [r.as_dict() for r in results]
        if protocols:
            rows += self._audit_leakage(model, datamodule, audit, protocols, permutations, folds)
        return rows

    def _audit_leakage(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        audit: AttributeAudit,
        protocols: list[str],
        permutations: int,
        folds: int,
    ) -> list[dict[str, object]]:
        from lit_unlearn.attacks.leakage import (
            audit_leakage,
            leakage_markdown,
            write_leakage_tables,
        )

        X = audit._representation(model)  # every rank: it may need collectives
        if not self.is_global_zero:
            return []
        attrs = datamodule.user_attributes  # type: ignore[attr-defined]
        names = audit.attributes if audit.attributes is not None else attrs.names
        results = audit_leakage(
            X,
            {n: attrs.codes[n] for n in names},
            {n: attrs.num_classes(n) for n in names},
            attackers=audit._attackers,
            protocols=protocols,
            shadow=attrs.shadow,
            n_permutations=permutations,
            n_folds=folds,
            seed=audit.seed,
            log=print,
        )
        assert audit.save_dir is not None
        write_leakage_tables(results, audit.save_dir, stem="leakage_checkpoint")
        print(f"\nAttribute leakage at checkpoint:\n{leakage_markdown(results)}", flush=True)
        return [r.as_dict() for r in results]

    def _audit_classifier(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        ckpt_path: str | None,
        seed: int,
        output_dir: str | None,
    ) -> list[dict[str, object]]:
        from lit_unlearn.attacks.class_audit import ClassAudit

        datamodule.setup("test")
        if ckpt_path is not None:
            ckpt = read_checkpoint(ckpt_path)
            check_checkpoint(ckpt, model, datamodule, ckpt_path)
            dm_state = ckpt.get(type(datamodule).__qualname__)
            if dm_state:
                datamodule.load_state_dict(dm_state)  # refuses another label set
            restore = getattr(model, "restore_weights", model.load_state_dict)
            restore(ckpt["state_dict"])  # a checkpoint of another model: a clear ValueError
        model.trainer = self
        self.datamodule = datamodule
        model.setup("test")
        audit = ClassAudit(
            export=True, seed=seed, save_dir=output_dir or (self.log_dir or "."), verbose=True
        )
        result = audit.run(self, model, stage="checkpoint")
        return [{"metric": k, "value": v} for k, v in result.items()]
