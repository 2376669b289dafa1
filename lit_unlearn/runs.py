"""Helpers shared by the one-command experiments: config objects and a bare trainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.tasks import RecommenderTask

__all__ = ["bare_trainer", "cli_objects"]


def cli_objects(
    configs: Sequence[str], extra: Sequence[str]
) -> tuple[RecommenderTask, RecommendationData]:
    """Instantiate model and data exactly as ``lit-unlearn fit --config ...`` would.

    Args:
        configs: YAML files, in order (later ones override earlier ones).
        extra: Further ``--key=value`` overrides.

    Raises:
        TypeError: The configs do not describe a RecommenderTask and a RecommendationData.
    """
    from lit_unlearn.cli import build_cli  # the CLI imports every experiment-facing module

    args = [a for c in configs for a in ("--config", c)] + list(extra) + ["--trainer.logger=false"]
    cli = build_cli(args, run=False)
    if not isinstance(cli.model, RecommenderTask) or not isinstance(
        cli.datamodule, RecommendationData
    ):
        raise TypeError("the configs must give a RecommenderTask and a RecommendationData")
    return cli.model, cli.datamodule


def bare_trainer(
    max_epochs: int,
    callbacks: list[pl.Callback] | None = None,
    accelerator: str = "auto",
    **kwargs: Any,
) -> pl.Trainer:
    """One device, no logger, checkpoints, progress bar or validation: timing-friendly."""
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        **kwargs,
    )
