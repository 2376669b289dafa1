"""Every ``lit-unlearn`` command in README.md and docs/ runs, in order, on shortened schedules.

The config tests use ``fast_dev_run``, which drops loggers, checkpoints and Lightning's
``SaveConfigCallback``; the documented commands run without it. Here each one runs as written
(through the same entry point, in a scratch directory that sees ``configs/`` and
``../shared``), with only the schedule shortened, so a path the docs promise, a checkpoint a
later command loads, or a callback DDP must pickle is checked as users meet it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lit_unlearn.cli import build_cli
from tests.conftest import ML100K, SHARED_DATASETS

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FIT_LIMITS = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.check_val_every_n_epoch=1",  # so a monitored "best" checkpoint gets written
    "--trainer.enable_progress_bar=false",
]

EXTRA = {
    "fit": FIT_LIMITS,
    "test": ["--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false"],
    "audit": ["--trainer.enable_progress_bar=false"],
}


def documented_commands(paths: list[Path]) -> list[list[str]]:
    """``lit-unlearn`` argument lists from the fenced bash blocks, in order, without repeats."""
    commands: list[list[str]] = []
    for path in paths:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]  # environment prefix (WANDB_MODE=offline: set in tests)
                is_cli = bool(words) and words[0] in ("lit-unlearn", ".venv/bin/lit-unlearn")
                if is_cli and words[1:] not in commands:
                    commands.append(words[1:])
    return commands


def test_parser_finds_the_documented_commands() -> None:
    commands = documented_commands(DOCS)
    subcommands = {c[0] for c in commands}
    assert {"fit", "test", "audit"} <= subcommands
    assert any("configs/trainer/ddp_cpu.yaml" in c for c in commands)
    assert any("configs/experiment/interaction/alteraser_ml100k_ah.yaml" in c for c in commands)
    # continuation lines are joined and comments dropped
    assert all(not w.startswith("#") and w != "\\" for c in commands for w in c)


def test_documented_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not ML100K.exists():
        pytest.skip("ML-100K not found beside the repository")
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").symlink_to(SHARED_DATASETS.parent)  # ../shared from the work dir
    monkeypatch.chdir(work)
    # The audit example reads the checkpoint `make demo` leaves.
    build_cli(["fit", "--config", "configs/experiment/demo.yaml", *FIT_LIMITS])
    ran = []
    for args in documented_commands(DOCS):
        build_cli([*args, *EXTRA[args[0]]])
        ran.append(" ".join(args[:3]))
    assert len(ran) >= 10, ran
