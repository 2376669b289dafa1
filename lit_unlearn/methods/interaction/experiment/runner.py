"""Train and evaluate every row of one repetition (paper 003, section 5: Tables 3-5)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Timer

from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.fingerprint import FINGERPRINT_KEY, make_fingerprint
from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.experiment.aggregate import aggregate, merge
from lit_unlearn.methods.interaction.experiment.config import (
    KS,
    ORIGINAL,
    REFERENCE,
    ExperimentConfig,
    Row,
    instantiate_callbacks,
    load_experiment,
)
from lit_unlearn.methods.interaction.experiment.provenance import command_line, environment
from lit_unlearn.methods.interaction.experiment.render import write_report
from lit_unlearn.methods.interaction.experiment.store import ResumeError, RunStore
from lit_unlearn.methods.interaction.metrics import ForgettingEvaluation, evaluate_forgetting
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

__all__ = ["main", "parse_args", "run", "run_once"]


def _objects(
    config: ExperimentConfig, seed: int, methods: Sequence[str], extra: Sequence[str]
) -> tuple[RecommenderTask, ForgettingData]:
    """Model and data as ``lit-unlearn fit --config data --config model [--config method]``."""
    overrides = [
        f"--data.init_args.seed={seed}",
        f"--data.init_args.scenario={config.scenario}",
        f"--data.init_args.num_forget_users={config.num_forget_users}",
        *config.overrides,
        *extra,
    ]
    pl.seed_everything(seed, verbose=False)  # the same initialisation for every trained row
    task, data = cli_objects([config.data, config.model, *methods], overrides)
    if not isinstance(data, ForgettingData):
        raise TypeError(f"the data config must give a ForgettingData, got {type(data).__name__}")
    return task, data


@dataclass
class _Trained:
    """A trained (or loaded) model of one row and how it was trained."""

    task: RecommenderTask
    seconds: float
    epochs: int
    env: dict[str, Any]
    solver: float | None = None


def _fit(
    task: RecommenderTask,
    data: ForgettingData,
    callbacks: list[pl.Callback],
    max_epochs: int,
    **kwargs: Any,
) -> tuple[float, int, torch.device]:
    """Train; the Lightning ``Timer``'s training-loop seconds, the epochs run, the device."""
    timer = Timer()
    trainer = bare_trainer(max_epochs, [timer, *callbacks], **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*configure_optimizers.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(task, datamodule=data)
    return timer.time_elapsed("train"), int(trainer.current_epoch), trainer.strategy.root_device


def _fit_row(
    config: ExperimentConfig, row: Row, seed: int, original: Path, command: str
) -> _Trained:
    """One method row from the original checkpoint (or from scratch: Retrain)."""
    extra = []
    if row.shuffle_seed_offset is not None:
        extra.append(f"--data.init_args.shuffle_seed={seed + row.shuffle_seed_offset}")
    task, data = _objects(config, seed, [str(row.method)], extra)
    callbacks = instantiate_callbacks(config.callback_specs(row, str(original)))
    kwargs = config.trainer_kwargs(row)
    seconds, epochs, device = _fit(task, data, callbacks, kwargs.pop("max_epochs"), **kwargs)
    erasers = [c for c in callbacks if isinstance(c, AltEraser)]
    # AltEraser's own time in its passes (block solves + objective), inside the Timer's: the
    # difference is Lightning's loop around them, which tells a slow solve from a slow loop.
    solver = float(sum(sum(e.pass_seconds) for e in erasers)) if erasers else None
    return _Trained(task, seconds, epochs, environment(device, command), solver)


def _original(
    config: ExperimentConfig,
    seed: int,
    workdir: Path,
    store: RunStore | None,
    command: str,
) -> tuple[_Trained, Path]:
    """The Original model: loaded from the repetition's checkpoint when resuming, else trained
    on ``D_a`` with the experiment's stop rule and saved there (with its time and epochs)."""
    if store is not None and store.original(seed).is_file():
        state = store.load_original(seed)
        task, _ = _objects(config, seed, [], ["--data.init_args.train_on=all"])
        task.restore_weights(state["state_dict"])
        trained = _Trained(task, state["seconds"], state["epochs"], state["environment"])
        return trained, store.original(seed)
    task, data = _objects(config, seed, [], ["--data.init_args.train_on=all"])
    stop = instantiate_callbacks([config.stop])
    seconds, epochs, device = _fit(task, data, stop, config.max_epochs)
    trained = _Trained(task, seconds, epochs, environment(device, command))
    if store is not None:
        return trained, store.save_original(
            seed, task, seconds, epochs, trained.env, make_fingerprint(task.model, data)
        )
    path = workdir / f"original_seed{seed}.ckpt"
    # The weights are all the unlearners need (UnlearningCallback reads "state_dict"); the
    # fingerprint lets them check it is the model of their data.
    torch.save(
        {"state_dict": task.state_dict(), FINGERPRINT_KEY: make_fingerprint(task.model, data)},
        path,
    )
    return trained, path


def _backbone(task: RecommenderTask) -> dict[str, float]:
    model = task.model
    return {
        "embedding_dim": float(getattr(model, "embedding_dim", float("nan"))),
        "negative_weight": float(getattr(model, "negative_weight", float("nan"))),
        "reg": float(getattr(model, "reg", float("nan"))),
        "dropout": float(getattr(model, "dropout", float("nan"))),
    }


def _evaluate(
    config: ExperimentConfig,
    name: str,
    trained: _Trained,
    data: ForgettingData,
    reference: torch.Tensor | None,
) -> tuple[dict[str, Any], ForgettingEvaluation]:
    """The quality columns of one row, and the evaluation (lists, per-user values)."""
    model = trained.task.model.cpu().eval()
    evaluation = evaluate_forgetting(
        model,
        data.forget_users,
        data.forget_pairs,
        data.remaining_pairs,
        torch.as_tensor(data.split.test),
        ks=KS,
        reference_lists=reference,
        rbo_p=config.rbo_p,
    )
    values: dict[str, Any] = dict(evaluation.values)
    if name == REFERENCE:
        values.update({f"rbo@{k}": 1.0 for k in KS})
    objective = getattr(model, "objective", None)
    if callable(objective):
        # L_Dr where each model stopped (the expected loss with dropout): shows how far each
        # stopping rule is from the optimum, the same quantity for trained and unlearned rows.
        with torch.no_grad():
            values["objective"] = float(objective(data.remaining_pairs))
    values.update({"seconds": trained.seconds, "epochs": float(trained.epochs)})
    if trained.solver is not None:
        values["solver_seconds"] = trained.solver
    return values, evaluation


def run_once(
    config: ExperimentConfig,
    seed: int,
    workdir: Path,
    store: RunStore | None = None,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """All rows of one repetition (one split, request and initialisation).

    The original model trains on ``D_a`` with the experiment's stop rule and is saved (to
    ``workdir``, or the store's checkpoint folder); every selected row then runs from its method
    config; each is evaluated on the forgetting users of this seed against Retrain's lists as
    soon as it is trained (Retrain first: every other row's RBO needs its lists).

    Args:
        config: The experiment.
        seed: The repetition's seed.
        workdir: Folder of the original checkpoint when there is no ``store``.
        store: Write each row to ``rows.jsonl`` and its exports as it completes, and skip the
            rows it already holds (resume); None keeps everything in memory.
        command: The command line recorded in the rows (default: this process's).

    Returns:
        One dict per row (Original first, then the rows in table order): ``seed``, ``method``,
        the backbone hyperparameters, the quality metrics, ``objective`` (``L_Dr`` where the
        model stopped), ``seconds``, ``epochs``, for AltEraser rows ``solver_seconds``, the
        environment (:data:`PROVENANCE`), ``per_user`` (the evaluated users' raw ids and their
        Recall/NDCG@k) and, with a store, ``export`` (the row's export folder).
    """
    command = command if command is not None else command_line()
    done = store.done(seed) if store is not None else {}
    names = [ORIGINAL, *(r.name for r in config.selected())]
    if all(n in done for n in names):
        return [done[n] for n in names]
    if store is not None and ORIGINAL in done and not store.original(seed).is_file():
        raise ResumeError(
            f"the Original row of seed {seed} is in {store.rows_path} but its checkpoint "
            f"{store.original(seed)} is gone: the other rows would start from another model. "
            "Pass --fresh to start over."
        )
    original, checkpoint = _original(config, seed, workdir, store, command)
    backbone = _backbone(original.task)
    # Evaluation: everything on the remaining-data module of this seed (same split, same D_f).
    _, data = _objects(config, seed, [], ["--data.init_args.train_on=remaining"])
    data.setup("test")
    users, index = data.forget_users, data.index
    reference = None
    if store is not None and REFERENCE in done:
        reference = store.read_lists(seed, REFERENCE, index, users)
    # Retrain first (every other row's RBO needs its lists), then the table order.
    order = [REFERENCE, *(n for n in names if n != REFERENCE)]
    exported = False
    for name in order:
        if name in done:
            continue
        if name == ORIGINAL:
            trained = original
        else:
            row = next(r for r in config.rows if r.name == name)
            trained = _fit_row(config, row, seed, checkpoint, command)
        values, evaluation = _evaluate(config, name, trained, data, reference)
        if name == REFERENCE:
            reference = evaluation.lists
        per_user = {"user": _raw(index.user_ids, evaluation.users)}
        per_user.update({m: v.tolist() for m, v in evaluation.per_user.items()})
        result = {"seed": seed, "method": name, **backbone, **values, **trained.env}
        if store is not None:
            if not exported:
                store.export_request(seed, data, evaluation.users)
                exported = True
            result["export"] = store.export_row(seed, name, trained.task, users, evaluation, index)
        result["per_user"] = per_user
        if store is not None:
            store.append(result)  # after its exports: a row in rows.jsonl is complete
        done[name] = result
    return [done[n] for n in names]


def _raw(ids: Sequence[Any], rows: torch.Tensor) -> list[str]:
    return [str(ids[int(r)]) for r in rows.tolist()]


def run(config: ExperimentConfig, fresh: bool = False, command: str | None = None) -> pd.DataFrame:
    """Every repetition of ``config``; writes the report into ``config.out``.

    Rows are written to ``rows.jsonl`` as they complete; a run in an ``out`` that holds rows
    of the same config resumes (skips them), one of another config is refused
    (:class:`ResumeError`) unless ``fresh``.

    Args:
        config: The experiment.
        fresh: Discard an earlier run in ``config.out`` and start over.
        command: The command line recorded in the rows and reports (default: this process's).

    Returns:
        The aggregated table (one row per method).
    """
    out = Path(config.out)
    store = RunStore.open(config, fresh=fresh)
    torch.set_float32_matmul_precision("high")
    command = command if command is not None else command_line()
    rows: list[dict[str, Any]] = []
    for r in range(config.repeats):
        rows.extend(run_once(config, config.seed + r, store.checkpoints, store, command))
    table = aggregate(rows, config.names)
    write_report(table, rows, config, out)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Run-level flags only: every method hyperparameter is in the YAML files."""
    p = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.interaction.experiment",
        description="The AltEraser comparison (paper 003, Tables 3-5) from an experiment YAML.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="experiment YAML, e.g. configs/experiment/interaction/alteraser_ml100k_table.yaml",
    )
    p.add_argument("--scenario", choices=["noise", "privacy"], default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the first repetition")
    p.add_argument("--out", default=None)
    p.add_argument("--methods", nargs="+", default=None, help="run only these rows (+ Retrain)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra lit-unlearn override of the data/model configs (e.g. a data root)",
    )
    p.add_argument(
        "--fresh",
        "--restart",
        dest="fresh",
        action="store_true",
        help="discard the rows, checkpoints and exports of an earlier run in --out and start "
        "over (without it, a run resumes an --out of the same config and refuses another's)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="trains nothing: rebuild the report in --out from these results.csv (or rows.jsonl, "
        "which keep the per-user values of the confidence intervals) files (repetitions run in "
        "separate invocations; pass the --config they were run with)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lit_unlearn.methods.interaction.experiment --config ...``."""
    args = parse_args(argv)
    command = command_line(sys.argv[1:] if argv is None else argv)
    config = load_experiment(
        args.config,
        scenario=args.scenario,
        repeats=args.repeats,
        seed=args.seed,
        out=args.out,
        methods=args.methods,
        overrides=args.override,
    )
    if args.merge:
        rows = merge(args.merge)
        table = aggregate(rows, config.names)
        write_report(table, rows, config, Path(config.out), command=command)
    else:
        try:
            table = run(config, fresh=args.fresh, command=command)
        except ResumeError as err:
            raise SystemExit(f"error: {err}") from err
    print(json.dumps({m: round(float(s), 3) for m, s in table["seconds"].items()}))
