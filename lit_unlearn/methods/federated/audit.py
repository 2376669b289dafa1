"""Audits of a federated run: the outside adversary's embedding attack every N rounds, and the
export of the user representations with raw dataset ids for anyone's own attacker.

FedAU2's external adversary (App. A.2) reads the user embeddings at any iteration and knows
the attributes of 20% of the users (the DataModule's shadow set): an MLP with one hidden layer
of 100 units trained on those, tested on the other 80%. Its micro-F1, macro-F1 and balanced
accuracy are reported (the paper's "F1" behaves like macro-F1: spec decision 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_unlearn.attacks.audit import (
    audit_embeddings,
    results_to_frame,
    results_to_markdown,
    shadow_split,
)
from lit_unlearn.attacks.base import AttackResult
from lit_unlearn.attacks.gradient_inversion import (
    LabelRecoveryResult,
    dlg_attack,
    evaluate_label_recovery,
    idlg_labels,
)
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.attacks.scores import attack_scores, majority_class
from lit_unlearn.methods.federated.adversary import UploadRecorder
from lit_unlearn.models.fedrap import FedRAP
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.reporting.tracking import log_metrics

__all__ = [
    "EmbeddingAttack",
    "GradientInversionAudit",
    "column_ensemble_attack",
    "export_representations",
    "local_sgd_steps",
]


def export_representations(path: str | Path, pl_module: Any, datamodule: Any) -> Path:
    """Write every user's representation with the dataset's raw user ids as ``.npz``.

    Keys: ``user_id`` (raw ids, strings), ``representation`` (``[U, d]`` float32), one
    ``attr_<name>`` code array per attribute (``-1`` unknown) with ``classes_<name>``, and
    ``shadow`` (bool: the users whose attributes the outside adversary knows, the split of
    :class:`EmbeddingAttack`, so an auditor can reproduce its numbers or use another split).
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
    extra["shadow"] = np.asarray(attrs.shadow.cpu().numpy(), dtype=bool)
    extra["user_id"] = np.asarray(index.user_ids, dtype=str)
    extra["representation"] = rep
    np.savez(out, **extra)  # type: ignore[arg-type]
    return out


def column_ensemble_attack(
    matrices: torch.Tensor,
    codes: torch.Tensor,
    shadow: torch.Tensor,
    num_classes: int,
    attribute: str,
    hidden: int = 100,
    seed: int = 0,
) -> AttackResult:
    """FedAU2's attack on FedRAP's residuals (App. A.2): one MLP per column, averaged.

    Each user holds a matrix ``[M, N]`` (FedRAP's ``D_u``: items x dimensions). Column ``j``
    (an ``M``-vector per user) trains its own MLP (one hidden layer of ``hidden``) on the
    shadow users; the ``N`` predicted distributions are averaged per test user.

    Args:
        matrices: ``[U, M, N]`` per-user matrices.
        codes: Attribute codes ``[U]`` (``-1`` unknown).
        shadow: Bool ``[U]``, the users whose attribute the attacker knows.
        num_classes: Classes of the attribute.
        attribute: Its name (for the result).
        hidden: Hidden width of every column's MLP.
        seed: Seed of the validation split and the MLPs.
    """
    feats = matrices.detach().float().cpu()
    y = codes.detach().cpu().numpy().astype(np.int64)
    train, val, test = shadow_split(codes, shadow, seed=seed)
    if test.size == 0 or np.unique(y[train]).size < 2:
        raise ValueError(f"attribute {attribute!r}: too few labelled users to attack")
    proba = np.zeros((test.size, num_classes))
    for j in range(feats.shape[2]):
        col = feats[:, :, j].numpy()
        attacker = MLPAttacker(hidden=hidden, layers=2, seed=seed + j)
        attacker.fit(col[train], y[train], col[val], y[val], num_classes)
        proba += attacker.predict_proba(col[test])
    proba /= feats.shape[2]
    scores = attack_scores(y[test], proba, majority_class(y[np.concatenate([train, val])]))
    return AttackResult(
        attribute=attribute,
        attacker="mlp-columns",
        num_classes=num_classes,
        n_train=int(train.size),
        n_val=int(val.size),
        n_test=int(test.size),
        **scores,
    )


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
        attrs = dm.user_attributes
        results = audit_embeddings(rep, attrs, [attacker], names=self.attributes, seed=self.seed)
        model = getattr(pl_module, "model", None)
        if isinstance(model, FedRAP):
            # FedRAP's own attack: the per-column ensemble over the residual tables D_u.
            for name in self.attributes or attrs.names:
                results.append(
                    column_ensemble_attack(
                        model.residual_matrix(),
                        attrs.codes[name],
                        attrs.shadow,
                        len(attrs.classes[name]),
                        name,
                        self.hidden,
                        self.seed,
                    )
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


class GradientInversionAudit(Callback):
    """The honest-but-curious server's gradient attack on the adversary head's uploads.

    Records each client's latest upload of the head of ``pl_module.terms[term]`` (an
    :class:`~.adversary.AdversaryTerm`) and, once ``at_round`` rounds are done (FedAU2 App.
    A.2: 100), runs DLG (Zhu et al. 2019; LBFGS on a dummy embedding and label matching the
    upload) and iDLG (Zhao et al. 2020; the sign of the last layer's gradient) on every
    recorded user, scored against the true attribute with chance and majority baselines.
    The upload is turned into a gradient as ``-delta / lr`` (the local steps' summed gradient).

    A client's upload sums ``K`` local SGD steps (one per minibatch; the server knows ``K``
    from the protocol and the client's interaction count, :func:`local_sgd_steps`). The
    default DLG is built for that (measured on ML-100K uploads, docs/federated.md): it matches
    the mean step (``multi_step="mean"``: the upload divided by ``K``), since the client's
    label is one-hot tries each class as a fixed hard label and keeps the one whose dummy
    embedding matches best (``label_search``), and optimises by Adam (lr 0.1, 500
    iterations) rather than the reference's fixed-step L-BFGS, which stalls on these uploads.
    ``multi_step="sum", label_search=False, optimizer="lbfgs", restarts=0`` is the reference
    DLG (Zhu et al.); ``reference=True`` reports it as well (attack ``dlg-reference``).

    Args:
        at_round: Attack after this many rounds (or at the end of a shorter fit).
        term: Index of the adversary term in ``pl_module.terms``.
        restarts: Extra DLG starts for users whose matching did not converge (0 = the
            reference DLG; the server needs no label to decide, see ``dlg_attack``).
        steps: DLG ``LBFGS.step`` calls per user (with ``optimizer="adam"``: ``steps * 20``
            Adam iterations at lr 0.1).
        seed: Seed of the dummy initialisations.
        multi_step: ``dlg_attack``'s treatment of multi-step uploads (``sum``: the reference,
            ``mean``: divide by ``K``, ``unroll``: simulate ``K`` SGD steps of the head).
        label_search: Try each class as a fixed one-hot dummy label, keep the best match.
        optimizer: ``lbfgs`` (the reference's) or ``adam``.
        distance: ``l2`` (the reference) or ``cosine``.
        reference: Also run the reference DLG and report it as ``dlg-reference``.
        save_dir: Where ``gradient_attack.md/.csv`` go (None: the trainer's log dir).

    Attributes:
        results: The :class:`~lit_unlearn.attacks.LabelRecoveryResult` s once run.
    """

    def __init__(
        self,
        at_round: int = 100,
        term: int = 0,
        restarts: int = 0,
        steps: int = 25,
        seed: int = 0,
        save_dir: str | None = None,
        multi_step: Literal["sum", "mean", "unroll"] = "mean",
        label_search: bool = True,
        optimizer: Literal["lbfgs", "adam"] = "adam",
        distance: Literal["l2", "cosine"] = "l2",
        reference: bool = False,
    ) -> None:
        super().__init__()
        if multi_step not in ("sum", "mean", "unroll"):
            raise ValueError(f"multi_step must be 'sum', 'mean' or 'unroll', got {multi_step!r}")
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
        self.multi_step = multi_step
        self.label_search = bool(label_search)
        self.optimizer = optimizer
        self.distance = distance
        self.reference = bool(reference)
        for name, value, low in (("at_round", at_round, 1), ("term", term, 0),
                                 ("restarts", restarts, 0), ("steps", steps, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.at_round = at_round
        self.term = term
        self.restarts = restarts
        self.steps = steps
        self.seed = seed
        self.save_dir = save_dir
        self.recorder: UploadRecorder | None = None
        self.results: list[Any] = []
        self.done = False

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.recorder is not None:
            return
        terms = getattr(pl_module, "terms", None)
        if terms is None or self.term >= len(terms):
            raise ValueError(
                f"GradientInversionAudit attacks the adversary head of terms[{self.term}]; the "
                "task has no such term (add an AdversaryTerm to model.init_args.terms)"
            )
        if getattr(pl_module, "attribute", None) is None:
            raise ValueError("GradientInversionAudit needs the task's attribute (the labels)")
        self.recorder = UploadRecorder(prefix=f"terms.{self.term}.head.")
        pl_module.add_upload_hook(self.recorder)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.done and pl_module.rounds_done >= self.at_round:
            self.attack(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.done or getattr(trainer, "fast_dev_run", False):
            return
        if self.recorder is None or not self.recorder.users():
            # The server's stored uploads live in this process, not in checkpoints: a fit that
            # ran no round (a one-shot erasure of a trained model, a resumed fit already at its
            # end) has nothing to attack.
            rank_zero_warn(
                "GradientInversionAudit: no upload was recorded in this fit (it ran no round); "
                "nothing to attack"
            )
            return
        self.attack(trainer, pl_module)

    def attack(self, trainer: pl.Trainer, pl_module: Any) -> list[Any]:
        """Run DLG and iDLG on the recorded uploads now; log and write the results."""
        assert self.recorder is not None
        users = self.recorder.users()
        dm = trainer.datamodule  # type: ignore[attr-defined]
        codes = dm.user_attributes.codes[pl_module.attribute]
        known = [u for u in users if int(codes[u]) >= 0]
        if not known:
            raise ValueError("GradientInversionAudit: no recorded client has a known label")
        term = pl_module.terms[self.term]
        head_optimizer = term.optimizer if term.lr is not None else pl_module.client_optimizer
        if head_optimizer != "sgd":
            rank_zero_warn(
                "GradientInversionAudit: the head is not trained with SGD, so -delta / lr is "
                "not the summed gradient DLG matches (iDLG's sign rule still applies)"
            )
        head = term.head
        logs = [self.recorder.latest[u] for u in known]
        names = list(logs[0]["start"])
        params = {n: torch.stack([log["start"][n] for log in logs]) for n in names}
        # SGD: -delta / lr is the sum of the local steps' gradients.
        grads = {n: torch.stack([-log["delta"][n] / log["lr"][n] for log in logs]) for n in names}
        labels = codes[torch.tensor(known)].cpu()
        num_classes = len(dm.user_attributes.classes[pl_module.attribute])
        head_lr = torch.tensor([float(log["lr"][names[0]]) for log in logs])
        local_steps = local_sgd_steps(pl_module, known)
        dlg = dlg_attack(
            head,
            params,
            grads,
            steps=self.steps,
            restarts=self.restarts,
            seed=self.seed,
            multi_step=self.multi_step,
            local_steps=local_steps,
            local_lr=head_lr,
            label_search=self.label_search,
            optimizer=self.optimizer,
            lr=0.1 if self.optimizer == "adam" else 1.0,
            distance=self.distance,
        )
        last = _last_linear_name(head)
        idlg = idlg_labels(grads[f"{last}.weight"], grads.get(f"{last}.bias"))
        self.results = [evaluate_label_recovery(dlg.labels, labels, num_classes, attack="dlg")]
        if self.reference:
            ref = dlg_attack(head, params, grads, steps=self.steps, restarts=0, seed=self.seed)
            self.results.append(
                evaluate_label_recovery(ref.labels, labels, num_classes, attack="dlg-reference")
            )
        self.results.append(evaluate_label_recovery(idlg, labels, num_classes, attack="idlg"))
        self.done = True
        rounds = sorted({int(self.recorder.latest[u]["round"]) for u in known})
        if trainer.is_global_zero:
            metrics = {
                f"gradient_attack/{r.attack}/{k}": float(getattr(r, k))
                for r in self.results
                for k in ("accuracy", "balanced_accuracy", "chance", "majority_accuracy")
            }
            log_metrics(trainer.loggers, metrics, step=pl_module.rounds_done)
            out = Path(self.save_dir if self.save_dir is not None else (trainer.log_dir or "."))
            out.mkdir(parents=True, exist_ok=True)
            frame = pd.DataFrame([r.as_dict() for r in self.results])
            frame.insert(0, "attribute", pl_module.attribute)
            frame.insert(1, "after_round", pl_module.rounds_done)
            frame.to_csv(out / "gradient_attack.csv", index=False)
            (out / "gradient_attack.md").write_text(
                f"Gradient attack on the stored uploads of {len(known)} clients (latest upload "
                f"rounds {rounds[0]}-{rounds[-1]}), attribute {pl_module.attribute!r}:\n\n"
                + markdown_table(frame)
                + "\n"
            )
        return self.results

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "results": [r.as_dict() for r in self.results]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))
        self.results = [LabelRecoveryResult(**r) for r in state_dict.get("results", [])]


def local_sgd_steps(task: Any, users: list[int]) -> torch.Tensor:
    """Each user's number of local SGD steps per round, as the server can compute it.

    Everything used is public to the server: the protocol (local epochs, local batch size and
    how the local loss builds its examples, e.g. negatives per positive) and each client's
    interaction count, which FedAvg weights the uploads by. The examples are drawn as a client
    draws them (only their number matters), and the steps follow the engine: one step per
    minibatch, ``ceil(examples / batch)`` per epoch (one per epoch for an unbatched loss).

    Args:
        task: A :class:`~.task.FederatedTask` with its engine built (``setup("fit")`` done).
        users: User ids.

    Returns:
        ``int64[len(users)]`` local steps (0 for a user with no training examples).
    """
    engine = getattr(task, "engine", None)
    if engine is None:
        raise ValueError("local_sgd_steps needs the task's engine (call it during or after fit)")
    clients = torch.as_tensor(users, dtype=torch.long)
    generators = [torch.Generator().manual_seed(int(u)) for u in users]
    examples = engine.local_loss.examples(engine.data, clients, generators)
    lengths = examples.mask.sum(dim=1).long()
    if engine.local_loss.batched and engine.local_batch_size is not None:
        batch = int(engine.local_batch_size)
        per_epoch = (lengths + batch - 1) // batch
    else:
        per_epoch = (lengths > 0).long()
    return per_epoch * int(engine.local_epochs)


def _last_linear_name(head: nn.Module) -> str:
    """Name of the head's last ``nn.Linear`` (the layer iDLG reads)."""
    names = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(head).__name__} has no nn.Linear layer for iDLG to read")
    return names[-1]
