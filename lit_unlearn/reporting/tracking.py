"""Where numbers go besides files: the trainer's Lightning loggers and Weights & Biases runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["log_metrics", "log_wandb_report"]


def log_metrics(loggers: Iterable[Any], metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` to every Lightning logger and flush it.

    Audits happen outside the loops' logging cadence (fit start, test end, a checkpoint), so
    each logger is saved at once instead of waiting for the next loop flush.
    """
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=step)
        logger.save()


def log_wandb_report(
    out_dir: str | Path,
    project: str,
    job_type: str,
    config: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    images: Sequence[Path] = (),
) -> None:
    """One W&B run holding an experiment's tables and figures (honours ``WANDB_MODE``)."""
    import wandb

    run = wandb.init(project=project, dir=str(out_dir), config=dict(config), job_type=job_type)
    payload: dict[str, Any] = {name: wandb.Table(dataframe=frame) for name, frame in tables.items()}
    payload.update({Path(p).stem: wandb.Image(str(p)) for p in images})
    run.log(payload)
    run.finish()
