"""What a ``lit-unlearn`` fit does with the files around it: never destroy, always say how to go on.

:class:`RunGuard` is a callback every task adds to its fits
(``UnlearnableTask.configure_callbacks``, so CLI and plain ``Trainer`` users both get it):

- **No run destroys a model.** A fit refuses to save into the folder of a model it reads (the
  checkpoint it unlearns, the user index), whatever the paths look like. A *fresh* fit whose
  checkpoint folder already holds checkpoints of an earlier run (the shipped configs save to a
  fixed ``runs/<name>/checkpoints`` with ``enable_version_counter: false``) first moves them
  to ``<folder>/previous/<time of the earlier run>/``, so re-running a config (with a bad
  learning rate, on other data...) cannot overwrite the earlier ``best.ckpt`` / ``last.ckpt``,
  while ``runs/<name>/checkpoints/best.ckpt`` still names the newest run's model. A resumed
  fit (``--ckpt_path`` inside that folder) continues the run and keeps writing there.
- **A stopped run says so.** A fit stopped by SIGTERM (a scheduler's pre-emption, ``kill``)
  is unfinished; Lightning would exit with status 0. The guard saves ``last.ckpt`` at the
  step it stopped at (one process), makes the exit status 143 (128 + SIGTERM) and names the
  command that resumes it: the resumed fit continues exactly where the stopped one was.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_unlearn.unlearning.base import refuse_outputs_over_inputs

__all__ = ["SIGTERM_EXIT_CODE", "RunGuard", "archive_previous_checkpoints"]

#: Exit status of a fit stopped by SIGTERM (the shell's 128 + signal number).
SIGTERM_EXIT_CODE = 143

#: Sub-folder of a checkpoint folder where an earlier run's checkpoints are moved.
PREVIOUS_DIR = "previous"


def archive_previous_checkpoints(folder: Path) -> Path | None:
    """Move the ``*.ckpt`` files directly in ``folder`` to ``folder/previous/<stamp>/``.

    ``<stamp>`` is the time the newest of them was written (``YYYYmmdd-HHMMSS``, with a
    ``-N`` suffix if that folder exists already), i.e. when the earlier run saved its model.

    Returns:
        The folder they were moved to, or None when there was nothing to move.
    """
    files = sorted(p for p in folder.glob("*.ckpt") if p.is_file())
    if not files:
        return None
    newest = max(p.stat().st_mtime for p in files)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(newest))
    target = folder / PREVIOUS_DIR / stamp
    n = 1
    while target.exists():
        target = folder / PREVIOUS_DIR / f"{stamp}-{n}"
        n += 1
    target.mkdir(parents=True)
    for path in files:
        # os.replace within one folder tree: atomic, no copy, nothing lost if interrupted.
        os.replace(path, target / path.name)
    return target


class RunGuard(Callback):
    """Keeps a fit's outputs off its inputs and off earlier runs; turns SIGTERM into a resume.

    Added to every fit by
    :meth:`~lit_unlearn.unlearning.contract.UnlearnableTask.configure_callbacks`.

    Attributes:
        archived: Folders the last fit moved earlier checkpoints into.
        stopped_checkpoint: ``last.ckpt`` saved when the last fit was stopped by SIGTERM.
    """

    def __init__(self) -> None:
        super().__init__()
        self.archived: list[Path] = []
        self.stopped_checkpoint: Path | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Refused before anything moves or is written (also for plain training that reads a
        # user index from the folder it would save into).
        refuse_outputs_over_inputs(trainer, "lit-unlearn fit")
        self.archived = []
        self.stopped_checkpoint = None
        if getattr(trainer, "fast_dev_run", False):  # set by Trainer.__init__, not declared
            return  # saves nothing: leave earlier runs where they are
        resumed = Path(os.path.realpath(trainer.ckpt_path)).parent if trainer.ckpt_path else None
        for callback in trainer.checkpoint_callbacks:
            dirpath = getattr(callback, "dirpath", None)
            if dirpath is None:
                continue
            folder = Path(os.path.realpath(dirpath))
            if folder == resumed:
                continue  # a resumed run continues its own files
            if trainer.is_global_zero and folder.is_dir():
                target = archive_previous_checkpoints(folder)
                if target is not None:
                    self.archived.append(target)
                    rank_zero_info(
                        f"{folder} held the checkpoints of an earlier run: moved them to "
                        f"{target}. A fresh fit never overwrites an earlier run's models; "
                        "to continue a run, fit with --ckpt_path instead."
                    )
        trainer.strategy.barrier("lit_unlearn_archive")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        # SystemExit(None) would exit 0: an unfinished model must not look like a success.
        exception.code = SIGTERM_EXIT_CODE
        # Saved only between training steps: stopped inside a validation pass, the loops'
        # half-run validation state would not resume cleanly.
        saved = self._save_last(trainer) if trainer.training else None
        self.stopped_checkpoint = saved
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if saved is not None:
            how = f"saved {saved}; resume exactly from it with:\n  {_resume_command(saved)}"
        else:
            how = (
                "no checkpoint was saved at this step (several processes, stopped during "
                "validation, or no ModelCheckpoint with save_last); resume from the last saved "
                "checkpoint: the same command plus --ckpt_path=<its last.ckpt>"
            )
        print(
            f"lit-unlearn: fit stopped by SIGTERM at {where}: the model is INCOMPLETE; {how}",
            file=sys.stderr,
            flush=True,
        )
        setattr(exception, "lit_unlearn_message", how)  # noqa: B010 (read by the CLI)

    @staticmethod
    def _save_last(trainer: pl.Trainer) -> Path | None:
        """``last.ckpt`` of the first ModelCheckpoint with ``save_last``, at the current step.

        One process only: under DDP the other ranks may already be leaving the loop, and
        ``save_checkpoint`` needs every rank.
        """
        if trainer.world_size != 1:
            return None
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or not callback.save_last:
                continue
            if callback.dirpath is None:
                continue
            name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            path = Path(callback.dirpath) / name
            callback.last_model_path = str(path)
            trainer.save_checkpoint(path)
            return path
        return None


def _resume_command(checkpoint: Path) -> str:
    """The ``lit-unlearn`` command that was run, with ``--ckpt_path`` set to ``checkpoint``.

    Outside the console script (Python, tests) only the argument to add is named.
    """
    flag = f"--ckpt_path={checkpoint}"
    if not sys.argv or Path(sys.argv[0]).name != "lit-unlearn":
        return f"the same fit with ckpt_path={str(checkpoint)!r} ({flag} on the command line)"
    args: list[str] = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True  # its value is the next argument
        elif not arg.startswith("--ckpt_path="):
            args.append(arg)
    return shlex.join(["lit-unlearn", *args, flag])
