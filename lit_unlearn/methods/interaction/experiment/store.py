"""The output directory of a comparison: rows as they complete, resume, exports for audits.

Layout of ``out`` (docs/alteraser.md, "Output directory")::

    run.json                      the experiment config the rows belong to (resume checks it)
    rows.jsonl                    one JSON line per finished (seed, method) row, appended
    checkpoints/original_seed{S}.ckpt   the Original model (+ its time, epochs, environment)
    exports/seed{S}/index.json    raw user/item ids of the model rows/columns
    exports/seed{S}/request.json  scenario, forgetting users, evaluated users (raw ids)
    exports/seed{S}/forget_pairs.csv      D_f, the deleted pairs (raw ids)
    exports/seed{S}/remaining_pairs.csv   D_r of the forgetting users (excluded from lists)
    exports/seed{S}/test_pairs.csv        test pairs of the forgetting users
    exports/seed{S}/{method}/model.pt     the row's weights (loadable like the Original's)
    exports/seed{S}/{method}/embeddings.npz   P, Q, h and the raw ids, for non-torch audits
    exports/seed{S}/{method}/topk.csv     top-50 lists of the forgetting users (raw ids)
    report.md, results.csv, summary.csv, summary.json   written when every row is done

A row is appended to ``rows.jsonl`` only after its exports are complete (each file written to
a temporary name and renamed), so every row in it can be trusted on resume; a line cut short
by a kill is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.datamodules.index import UserIndex
from lit_unlearn.fingerprint import FINGERPRINT_KEY, read_checkpoint
from lit_unlearn.methods.interaction.experiment.config import ExperimentConfig
from lit_unlearn.methods.interaction.metrics import ForgettingEvaluation
from lit_unlearn.tasks import RecommenderTask

__all__ = [
    "CHECKPOINTS",
    "EXPORTS",
    "RECORD",
    "REPORT_FILES",
    "ROWS",
    "ResumeError",
    "RunStore",
    "config_record",
    "method_dir",
    "read_rows",
]

ROWS = "rows.jsonl"
RECORD = "run.json"
EXPORTS = "exports"
CHECKPOINTS = "checkpoints"
REPORT_FILES = ("report.md", "results.csv", "summary.csv", "summary.json")
_FORMAT = 1


class ResumeError(RuntimeError):
    """An output directory that cannot be resumed (another config, damaged files)."""


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_record(config: ExperimentConfig) -> dict[str, Any]:
    """Everything that decides the rows of a run (not ``out``), as plain JSON.

    The data, model and method config files enter by content (SHA-256), not by path: editing
    one between a kill and a resume is caught, resuming from another working directory (the
    same files found under another path) is not refused.
    """
    record = {
        "data": _sha256(config.data),
        "model": _sha256(config.model),
        "overrides": list(config.overrides),
        "scenario": config.scenario,
        "num_forget_users": config.num_forget_users,
        "seed": config.seed,
        "repeats": config.repeats,
        "rbo_p": config.rbo_p,
        "max_epochs": config.max_epochs,
        "stop": config.stop,
        "rows": [
            {
                "name": r.name,
                "method": _sha256(r.method),
                "trainer": r.trainer,
                "callbacks": r.callbacks,
                "shuffle_seed_offset": r.shuffle_seed_offset,
            }
            for r in config.rows
        ],
        "methods": list(config.methods) if config.methods is not None else None,
    }
    normalised: dict[str, Any] = json.loads(json.dumps(record))
    return normalised


def method_dir(name: str) -> str:
    """A file-system-safe folder name of a row (``Retrain*`` -> ``Retrain_star``)."""
    text = name.replace("*", "_star").replace("+", "_plus_")
    text = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
    return text or "row"


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp_path)``, then rename onto ``path``: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def read_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl``; a last line cut short by a kill is ignored.

    Args:
        path: The file.
        repair: Also cut the damaged last line from the file (before appending to it).

    Raises:
        ResumeError: A line other than the last is not JSON.
    """
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a line is complete with its newline
    lines = complete.decode().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ResumeError(f"{path}, line {number} is damaged: {err}") from err
    if repair and len(complete) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
    return rows


class RunStore:
    """Files of one comparison in ``out``; :meth:`open` checks or records the config.

    Args:
        out: The output directory.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    # ------------------------------------------------------------------ paths
    @property
    def rows_path(self) -> Path:
        return self.out / ROWS

    @property
    def checkpoints(self) -> Path:
        return self.out / CHECKPOINTS

    def original(self, seed: int) -> Path:
        """The Original model of repetition ``seed``."""
        return self.checkpoints / f"original_seed{seed}.ckpt"

    def seed_dir(self, seed: int) -> Path:
        return self.out / EXPORTS / f"seed{seed}"

    def row_dir(self, seed: int, method: str) -> Path:
        return self.seed_dir(seed) / method_dir(method)

    # ------------------------------------------------------------------ resume
    @classmethod
    def open(cls, config: ExperimentConfig, fresh: bool = False) -> RunStore:
        """The store of ``config.out``: resumed when it holds a run of the same config.

        Args:
            config: The experiment.
            fresh: Discard the rows, checkpoints, exports and reports of an earlier run there.

        Raises:
            ResumeError: ``out`` holds rows of another config, or rows without a recorded
                config; pass ``fresh`` (``--fresh``) to start over.
        """
        store = cls(Path(config.out))
        record = config_record(config)
        if fresh:
            store.clear()
        path = store.out / RECORD
        if path.is_file():
            stored = json.loads(path.read_text())
            old = stored.get("config", {}) if isinstance(stored, dict) else {}
            if old != record:
                keys = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
                raise ResumeError(
                    f"{store.out} holds a run of another experiment config (differs in "
                    f"{keys}); resuming needs the same config and flags. Pass --fresh to "
                    "discard that run and start over, or choose another --out."
                )
            if store.rows_path.is_file():
                read_rows(store.rows_path, repair=True)
            return store
        if store.rows_path.is_file():
            raise ResumeError(
                f"{store.rows_path} exists but {path} does not: cannot tell which config its rows "
                "belong to. Pass --fresh to discard them, or choose another --out."
            )
        store.clear()  # stale checkpoints of an older layout must not be mistaken for ours
        _write_text(path, json.dumps({"format": _FORMAT, "config": record}, indent=1) + "\n")
        return store

    def clear(self) -> None:
        """Remove what a run writes (and nothing else) from ``out``."""
        for name in (ROWS, RECORD, *REPORT_FILES):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / EXPORTS, ignore_errors=True)
        if self.checkpoints.is_dir():
            for ckpt in self.checkpoints.glob("original_seed*.ckpt"):
                ckpt.unlink()

    def rows(self) -> list[dict[str, Any]]:
        """Every finished row so far."""
        return read_rows(self.rows_path) if self.rows_path.is_file() else []

    def done(self, seed: int) -> dict[str, dict[str, Any]]:
        """The finished rows of repetition ``seed``, by method."""
        return {str(r["method"]): r for r in self.rows() if int(r["seed"]) == seed}

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row: a single ``write`` of one line, flushed to disk."""
        self.out.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(dict(row)) + "\n").encode()
        fd = os.open(self.rows_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ original model
    def save_original(
        self,
        seed: int,
        task: RecommenderTask,
        seconds: float,
        epochs: int,
        env: Mapping[str, Any],
        fingerprint: Mapping[str, Any] | None = None,
    ) -> Path:
        """The Original model with its time, epochs and environment (what its row needs), and
        the data/model fingerprint the unlearners check it against."""
        path = self.original(seed)
        state = {
            **({FINGERPRINT_KEY: dict(fingerprint)} if fingerprint is not None else {}),
            # The weights are all the unlearners need (UnlearningCallback reads "state_dict").
            "state_dict": task.state_dict(),
            "seconds": seconds,
            "epochs": epochs,
            "environment": dict(env),
        }
        _atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def load_original(self, seed: int) -> dict[str, Any]:
        state = read_checkpoint(self.original(seed), what="original model", state_dict=False)
        if not {"state_dict", "seconds", "epochs", "environment"} <= set(state):
            raise ResumeError(f"{self.original(seed)} lacks its time/epochs: pass --fresh")
        return state

    # ------------------------------------------------------------------ exports
    def export_request(self, seed: int, data: ForgettingData, users: Tensor) -> None:
        """Index, request (forgetting and evaluated users), D_f, and the forgetting users' D_r
        and test pairs, all with the raw ids of the source files."""
        index = data.index
        folder = self.seed_dir(seed)
        _atomic_write(folder / "index.json", index.save)
        forget = data.forget_users
        request = {
            "seed": seed,
            "scenario": data.scenario,
            "num_users": len(index.user_ids),
            "num_items": len(index.item_ids),
            "forget_users": _raw(index.user_ids, forget),
            "evaluated_users": _raw(index.user_ids, users),
        }
        _write_text(folder / "request.json", json.dumps(request, indent=1) + "\n")
        test = torch.as_tensor(data.split.test)
        remaining = data.remaining_pairs
        for name, pairs in (
            ("forget_pairs.csv", data.forget_pairs),
            ("remaining_pairs.csv", remaining[torch.isin(remaining[:, 0], forget)]),
            ("test_pairs.csv", test[torch.isin(test[:, 0], forget)]),
        ):
            frame = pd.DataFrame(
                {
                    "user_id": _raw(index.user_ids, pairs[:, 0]),
                    "item_id": _raw(index.item_ids, pairs[:, 1]),
                }
            )
            _atomic_write(folder / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))

    def export_row(
        self,
        seed: int,
        method: str,
        task: RecommenderTask,
        users: Tensor,
        evaluation: ForgettingEvaluation,
        index: UserIndex,
    ) -> str:
        """The row's weights and its lists of ``users`` (the forgetting users), raw ids.

        Returns:
            The folder, relative to ``out``.
        """
        folder = self.row_dir(seed, method)
        ids = {"user_ids": list(index.user_ids), "item_ids": list(index.item_ids)}
        state = {"state_dict": task.state_dict(), **ids}
        _atomic_write(folder / "model.pt", lambda tmp: torch.save(state, tmp))
        arrays = {k: v.detach().cpu().numpy() for k, v in task.model.state_dict().items()}
        arrays.update({k: np.asarray(v, dtype=str) for k, v in ids.items()})
        _atomic_write(folder / "embeddings.npz", lambda tmp: _savez(tmp, arrays))
        k = evaluation.lists.shape[1]
        frame = pd.DataFrame(
            {
                "user_id": np.repeat(_raw(index.user_ids, users), k),
                "rank": np.tile(np.arange(1, k + 1), len(users)),
                "item_id": _raw(index.item_ids, evaluation.lists.reshape(-1)),
                "score": evaluation.scores.reshape(-1).double().cpu().numpy(),
            }
        )
        _atomic_write(folder / "topk.csv", lambda tmp: frame.to_csv(tmp, index=False))
        return folder.relative_to(self.out).as_posix()

    def read_lists(self, seed: int, method: str, index: UserIndex, users: Tensor) -> Tensor:
        """The top-k lists a finished row exported, as model ids ``[U, k]`` in ``users`` order.

        Raises:
            ResumeError: The export is missing or does not cover ``users``.
        """
        path = self.row_dir(seed, method) / "topk.csv"
        if not path.is_file():
            raise ResumeError(f"{method} (seed {seed}) is in {ROWS} but {path} is missing")
        frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
        item = {raw: k for k, raw in enumerate(map(str, index.item_ids))}
        lists = []
        for user in _raw(index.user_ids, users):
            ranked = frame[frame["user_id"] == user].sort_values("rank")
            if ranked.empty:
                raise ResumeError(f"{path} has no list of user {user}")
            lists.append([item[i] for i in ranked["item_id"]])
        return torch.as_tensor(lists, dtype=torch.long)


def _raw(ids: Iterable[Any], rows: Tensor) -> list[str]:
    table = [str(i) for i in ids]
    return [table[int(r)] for r in rows.reshape(-1).tolist()]


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with path.open("wb") as f:  # a file object: np.savez would append .npz to a tmp name
        np.savez(f, **arrays)  # type: ignore[arg-type]
