"""Attribute-inference audit as a Lightning callback.

Add it to any recommender run to see, before and after training (or unlearning), how well an
attacker recovers each user attribute from the representation the model actually scores with::

    trainer = Trainer(callbacks=[AttributeAudit(attributes=["gender", "age"])])

or in a LightningCLI config::

    trainer:
      callbacks:
        - class_path: lit_unlearn.callbacks.AttributeAudit
          init_args: {attackers: [mlp, xgboost], when: [fit_start, fit_end]}

Contract with the rest of the run:

* the LightningModule provides ``user_representation() -> Tensor[num_users, d]``: every
  user-side vector its scores depend on (LightGCN's propagated vectors, NCF's GMF and MLP user
  embeddings side by side, ...); auditing one edited table while another path still leaks is not
  unlearning;
* the datamodule provides ``user_attributes`` (a
  :class:`~lit_unlearn.datamodules.containers.UserAttributes`).

Metrics go to every logger as ``audit/{stage}/{attribute}/{attacker}/{metric}`` at
``trainer.global_step``; tables are written as ``audit_{stage}.md`` / ``.csv``. With
``export=True`` the audited representation and the labels go to ``representations_{stage}.npz``
and ``attributes_{stage}.csv`` (raw user ids, class names, shadow mask:
:mod:`lit_unlearn.attacks.export`), for ``python -m lit_unlearn.attacks.leakage`` or anyone's
own attackers. Under DDP every
rank computes the representation (it may need collectives), rank 0 runs the attackers and
broadcasts the results, so all ranks hold the same numbers and rank 0 alone logs and writes.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_unlearn.attacks.audit import (
    ATTACKERS,
    audit_embeddings,
    make_attacker,
    results_to_frame,
    results_to_markdown,
)
from lit_unlearn.attacks.base import Attacker, AttackResult
from lit_unlearn.datamodules.protocols import AttributeData, require_data
from lit_unlearn.reporting.keys import audit_key
from lit_unlearn.reporting.tracking import log_metrics

__all__ = ["AttributeAudit", "AuditStage"]

AuditStage = Literal["fit_start", "fit_end", "test_end"]
_STAGES: tuple[str, ...] = ("fit_start", "fit_end", "test_end")


class AttributeAudit(Callback):
    """Run attribute-inference attackers on the model's user representation.

    Args:
        attributes: Attributes to audit; ``None`` audits all of the datamodule's attributes
            (untargeted attributes should be audited too).
        attackers: Attacker names from :data:`lit_unlearn.attacks.ATTACKERS` (``"mlp"``,
            ``"xgboost"``, ``"logreg"``, ``"knn"``), each built with its default
            configuration. If xgboost is not installed it is dropped with a warning, unless it
            is the only attacker.
        when: Stages to audit at: ``"fit_start"`` (the model before training, e.g. the model
            about to be unlearned), ``"fit_end"`` and ``"test_end"``.
        seed: Seed of the shadow train/validation split and of the attackers.
        save_dir: Folder for ``audit_{stage}.md`` / ``.csv``; ``None`` uses ``trainer.log_dir``.
        attacker_args: Optional constructor arguments per attacker name, e.g.
            ``{"mlp": {"max_epochs": 50}}``, overriding the defaults.
        verbose: Print each audit table (rank 0) as well as logging it.
        export: Also write the audited representation and attribute labels as
            ``representations_{stage}.npz`` / ``attributes_{stage}.csv`` (rows named by the
            datamodule's raw user ids when it has a user ``index``, else by row number).

    Attributes:
        results: ``stage -> list[AttackResult]`` of the audits run so far (restored from
            checkpoints, so a resumed run keeps its ``fit_start`` audit).

    Raises:
        ValueError: Unknown attacker or stage names, duplicates, empty lists, bad
            ``attacker_args``.
        ImportError: ``"xgboost"`` is the only attacker and xgboost is not installed.
    """

    def __init__(
        self,
        attributes: list[str] | None = None,
        attackers: list[str] = ["mlp", "xgboost"],  # noqa: B006 (copied, never mutated)
        when: list[AuditStage] = ["fit_start", "fit_end"],  # noqa: B006 (copied, never mutated)
        seed: int = 0,
        save_dir: str | None = None,
        attacker_args: dict[str, dict[str, Any]] | None = None,
        verbose: bool = True,
        export: bool = False,
    ) -> None:
        super().__init__()
        self.verbose = verbose
        self.export = bool(export)
        if attributes is not None:
            attributes = _unique_names(attributes, "attributes")
        attackers = _unique_names(attackers, "attackers")
        unknown = [a for a in attackers if a not in ATTACKERS]
        if unknown:
            raise ValueError(f"unknown attacker(s) {unknown}; available: {sorted(ATTACKERS)}")
        stages = _unique_names(when, "when")
        bad = [w for w in stages if w not in _STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad} in `when`; choose from {list(_STAGES)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if save_dir is not None and not isinstance(save_dir, str | os.PathLike):
            raise ValueError(f"save_dir must be a path or None, got {save_dir!r}")
        attacker_args = dict(attacker_args or {})
        stray = sorted(set(attacker_args) - set(attackers))
        if stray:
            raise ValueError(f"attacker_args for {stray}, which are not in attackers {attackers}")

        # Build the attackers now, so bad arguments or a missing xgboost fail before training.
        built: list[Attacker] = []
        for name in attackers:
            kwargs = attacker_args.get(name, {})
            if not isinstance(kwargs, dict):
                raise ValueError(f"attacker_args[{name!r}] must be a dict, got {kwargs!r}")
            try:
                built.append(make_attacker(name, seed=seed, **kwargs))
            except ImportError as err:
                if len(attackers) == 1:
                    raise
                rank_zero_warn(f"AttributeAudit: skipping attacker {name!r}: {err}")
            except TypeError as err:
                raise ValueError(f"attacker_args[{name!r}] = {kwargs}: {err}") from err

        self.attributes = attributes
        self.attackers = [a.name for a in built]
        self.when: list[AuditStage] = [cast(AuditStage, w) for w in stages]
        self.seed = seed
        self.save_dir = None if save_dir is None else os.fspath(save_dir)
        self.attacker_args = attacker_args
        self._attackers = built
        self.results: dict[str, list[AttackResult]] = {}
        # Stages whose results came from a checkpoint: a resumed fit must not re-audit its
        # "start", which is the middle of training, over the real start's results.
        self._restored: set[str] = set()

    @property
    def state_key(self) -> str:
        """Checkpoint key; distinct per configuration so several audits can coexist."""
        return self._generate_state_key(
            attributes=self.attributes, attackers=self.attackers, when=self.when
        )

    # ----------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail at setup, not after hours of training, when the model lacks the hook."""
        if not callable(getattr(pl_module, "user_representation", None)):
            raise TypeError(
                f"AttributeAudit needs {type(pl_module).__name__}.user_representation() -> "
                "Tensor[num_users, d] (the user vectors the model scores with)"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Audit the model before training (skipped when resuming: the start was audited)."""
        if "fit_start" in self._restored:
            return
        self._maybe_audit(trainer, pl_module, "fit_start")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Audit the trained model."""
        self._maybe_audit(trainer, pl_module, "fit_end")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Audit the model that was just tested."""
        self._maybe_audit(trainer, pl_module, "test_end")

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Results as plain dicts (picklable without this package's classes)."""
        return {"results": {stage: [r.as_dict() for r in rs] for stage, rs in self.results.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore results saved by :meth:`state_dict`."""
        stored = state_dict.get("results", {})
        self.results = {
            stage: [AttackResult.from_dict(d) for d in rows] for stage, rows in stored.items()
        }
        self._restored = set(self.results)

    # ---------------------------------------------------------------------------- internals

    def _maybe_audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # fast_dev_run is a smoke test of the loop: a full audit would only slow it down, and
        # the sanity check is not a model state worth auditing (as Lightning's own callbacks).
        fast_dev_run = getattr(trainer, "fast_dev_run", False)
        if stage not in self.when or fast_dev_run or trainer.sanity_checking:
            return
        self.run(trainer, pl_module, stage)

    def run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> list[AttackResult]:
        """Audit ``pl_module`` now, as stage ``stage``: attack, log, print and write the tables.

        The hooks call this at the stages in ``when``; ``lit-unlearn audit`` calls it on a
        checkpoint (stage ``checkpoint``). Every rank must call it (see the module docstring).

        Returns:
            The results, identical on every rank.
        """
        # Every rank computes the representation: a sharded model may need collectives for it.
        X = self._representation(pl_module)
        results = self._audit(trainer, X)
        self.results[stage] = results
        self._restored.discard(stage)
        # trainer.log_dir broadcasts internally: every rank must read it.
        out_dir = self.save_dir if self.save_dir is not None else trainer.log_dir
        if trainer.is_global_zero:
            self._log(trainer, stage, results)
            if self.verbose:
                print(
                    f"\nAttribute audit at {stage} "
                    "(attackers trained on shadow users, measured on the rest):"
                )
                print(results_to_markdown(results), flush=True)
            if out_dir is not None:
                self._write(out_dir, stage, results)
                if self.export:
                    self._export(trainer, out_dir, stage, X)
        return results

    def _audit(self, trainer: pl.Trainer, X: Tensor) -> list[AttackResult]:
        payload: tuple[str, Any] = ("ok", None)
        if trainer.is_global_zero:
            try:
                attributes = self._user_attributes(trainer)
                results = audit_embeddings(
                    X, attributes, self._attackers, names=self.attributes, seed=self.seed
                )
                payload = ("ok", [r.as_dict() for r in results])
            except Exception as err:
                # Broadcast the failure too: raising on rank 0 alone would leave the other
                # ranks waiting in the broadcast forever.
                payload = ("error", (type(err).__name__, str(err), traceback.format_exc()))
                if trainer.world_size == 1:
                    raise
        payload = trainer.strategy.broadcast(payload, src=0)
        kind, body = payload
        if kind == "error":
            name, message, trace = body
            raise RuntimeError(f"AttributeAudit failed on rank 0 with {name}: {message}\n{trace}")
        return [AttackResult.from_dict(d) for d in body]

    @staticmethod
    def _representation(pl_module: pl.LightningModule) -> Tensor:
        # Eval mode: the representation the model scores with has no dropout noise. Modes are
        # restored per module, as users may keep parts frozen in eval on purpose.
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            with torch.no_grad():
                X = pl_module.user_representation()  # type: ignore[operator]
        finally:
            _restore_modes(modes)
        if not isinstance(X, Tensor) or X.ndim != 2:
            raise TypeError(
                f"{type(pl_module).__name__}.user_representation() must return a 2-D Tensor "
                f"[num_users, d], got {type(X).__name__} {getattr(X, 'shape', '')}"
            )
        return X.detach().float().cpu()

    @staticmethod
    def _user_attributes(trainer: pl.Trainer) -> Any:
        datamodule: AttributeData = require_data(
            getattr(trainer, "datamodule", None), AttributeData, "AttributeAudit"
        )
        attributes = datamodule.user_attributes
        if attributes is None:
            raise RuntimeError(
                "AttributeAudit needs trainer.datamodule.user_attributes (a UserAttributes); "
                f"{type(datamodule).__name__}.user_attributes is None"
            )
        return attributes

    @staticmethod
    def _log(trainer: pl.Trainer, stage: str, results: list[AttackResult]) -> None:
        metrics = {
            audit_key(stage, r.attribute, r.attacker, key): float(getattr(r, key))
            for r in results
            for key in AttackResult.metric_names()
        }
        # fit_start/test_end happen outside the logging cadence of the loops: flushed now.
        log_metrics(trainer.loggers, metrics, step=trainer.global_step)

    @staticmethod
    def _write(out_dir: str, stage: str, results: list[AttackResult]) -> None:
        os.makedirs(out_dir, exist_ok=True)
        title = f"# Attribute audit: {stage}\n\n"
        with open(os.path.join(out_dir, f"audit_{stage}.md"), "w", encoding="utf-8") as f:
            f.write(title + results_to_markdown(results))
        results_to_frame(results).to_csv(os.path.join(out_dir, f"audit_{stage}.csv"), index=False)

    def _export(self, trainer: pl.Trainer, out_dir: str, stage: str, X: Tensor) -> None:
        from lit_unlearn.attacks.export import save_exported

        attributes = self._user_attributes(trainer)
        n = int(X.shape[0])
        index = getattr(getattr(trainer, "datamodule", None), "index", None)
        user_ids = getattr(index, "user_ids", None)
        if user_ids is None or len(user_ids) != n:
            rank_zero_warn(
                "AttributeAudit: the datamodule has no user index of this size; the exported "
                "representations are named by row number"
            )
            user_ids = [str(i) for i in range(n)]
        names = self.attributes if self.attributes is not None else attributes.names
        save_exported(
            os.path.join(out_dir, f"representations_{stage}.npz"),
            os.path.join(out_dir, f"attributes_{stage}.csv"),
            user_ids=list(user_ids),
            representations=X.numpy(),
            codes={name: attributes.codes[name].numpy() for name in names},
            classes={name: attributes.classes[name] for name in names},
            shadow=attributes.shadow.numpy(),
        )


def _unique_names(values: Any, arg: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValueError(f"{arg} must be a list of names, got {values!r}")
    names = list(values)
    if not names:
        raise ValueError(f"{arg} must not be empty")
    if not all(isinstance(v, str) for v in names):
        raise ValueError(f"{arg} must hold strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate names in {arg}: {names}")
    return names


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.training = training
