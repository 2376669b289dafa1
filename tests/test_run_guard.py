"""No run destroys a model; a run stopped by SIGTERM says so, exits non-zero and resumes exactly."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.models import MF
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.unlearning.run_guard import PREVIOUS_DIR, SIGTERM_EXIT_CODE
from tests.conftest import REPO


def _data(**kwargs: object) -> RecommendationData:
    source = Synthetic(num_users=60, num_items=40, interactions_per_user=10, seed=0)
    return RecommendationData(source=source, attributes=["gender"], num_eval_negatives=9, **kwargs)  # type: ignore[arg-type]


def _fit(out: Path, lr: float = 0.01, ckpt_path: str | None = None, max_epochs: int = 1) -> None:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                filename="best",
                monitor="val/sampled/ndcg@10",
                mode="max",
                save_last=True,
                enable_version_counter=False,  # as the shipped configs: fixed file names
            )
        ],
    )
    trainer.fit(RecommenderTask(MF(60, 40, 8), lr=lr), _data(), ckpt_path=ckpt_path)


def test_a_rerun_moves_the_earlier_run_aside_and_a_resume_continues_in_place(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "checkpoints"
    _fit(tmp_path)
    first = {name: (folder / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}
    steps = torch.load(folder / "last.ckpt", weights_only=False)["global_step"]
    _fit(tmp_path, lr=0.05)  # a re-run with other settings: must not replace the models
    (archive,) = (folder / PREVIOUS_DIR).iterdir()
    assert {p.name: p.read_bytes() for p in archive.iterdir()} == first
    assert (folder / "best.ckpt").read_bytes() != first["best.ckpt"]  # the newest run's model
    # Resuming continues the run in its own folder: nothing more is moved aside.
    _fit(tmp_path, ckpt_path=str(folder / "last.ckpt"), max_epochs=2)
    assert len(list((folder / PREVIOUS_DIR).iterdir())) == 1
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 2 * steps


def test_plain_training_never_saves_over_the_user_index_it_reads(tmp_path: Path) -> None:
    folder = tmp_path / "trained"
    _fit(folder)
    index = folder / "checkpoints" / "last.ckpt"
    before = index.read_bytes()
    pl.seed_everything(0, verbose=False)
    linked = tmp_path / "linked"
    linked.symlink_to(index.parent, target_is_directory=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[ModelCheckpoint(dirpath=linked, save_last=True)],
    )
    dm = _data(mode="data_free", user_index=str(index))
    with pytest.raises(ValueError, match="the folder of the user index it reads"):
        trainer.fit(RecommenderTask(MF(60, 40, 8)), dm)
    assert index.read_bytes() == before
    assert sorted(p.name for p in index.parent.iterdir()) == ["best.ckpt", "last.ckpt"]


# ---------------------------------------------------------------------- the CLI and SIGTERM
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run as the console script would be (argv[0] 'lit-unlearn'), from the repository root so
    # the test's SIGTERM callback imports.
    code = "import sys; sys.argv[0] = 'lit-unlearn'; from lit_unlearn.cli import main; main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _args(out: Path) -> list[str]:
    out.mkdir(parents=True)
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(out), "save_last": True, "enable_version_counter": False},
    }
    config = out / "trainer.yaml"
    config.write_text(json.dumps({"trainer": {"callbacks": [checkpoint]}}))
    return [
        "fit",
        "--config=configs/trainer/cpu.yaml",
        f"--config={config}",
        "--config=configs/data/synthetic.yaml",
        "--config=configs/model/mf.yaml",
        "--data.init_args.source.init_args.num_users=120",
        "--data.init_args.source.init_args.num_items=80",
        "--data.init_args.num_eval_negatives=20",
        "--data.init_args.batch_size=64",
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={out}",  # where the CLI writes config.yaml (not the repo)
    ]


@pytest.mark.slow  # three CLI processes, ~17 s on 2 cores
def test_cli_stopped_by_sigterm_exits_non_zero_and_its_command_resumes_it_exactly(
    tmp_path: Path,
) -> None:
    straight = _cli(tmp_path, *_args(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    stop = json.dumps(
        {
            "class_path": "tests.unlearning.test_resume.StopAt",
            "init_args": {"step": 40, "how": "sigterm"},
        }
    )
    parts = tmp_path / "parts"
    stopped = _cli(tmp_path, *_args(parts), f"--trainer.callbacks+={stop}")
    assert stopped.returncode == SIGTERM_EXIT_CODE, stopped.stderr[-3000:]
    assert "the model is INCOMPLETE" in stopped.stderr
    command = shlex.split(stopped.stderr.split("resume exactly from it with:\n")[1].splitlines()[0])
    assert command[0] == "lit-unlearn" and command[-1] == f"--ckpt_path={parts / 'last.ckpt'}"
    # The printed command, as printed, minus the stopping callback it repeats.
    resumed = _cli(tmp_path, *[a for a in command[1:] if "StopAt" not in a])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(parts / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
