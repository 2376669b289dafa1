"""Helpers shared by the one-command experiments: config objects, callbacks, a bare trainer.

Both families' comparison tables describe their rows as ``class_path`` + ``init_args`` specs;
:func:`import_object` and :func:`build_callbacks` turn them into objects the way LightningCLI
builds ``trainer.callbacks``, each raising the caller's error type with one message.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl

from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.tasks import RecommenderTask

__all__ = [
    "bare_trainer",
    "build_callbacks",
    "cli_objects",
    "cli_run_objects",
    "import_object",
    "merge_init_args",
]


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
    model, data, _ = cli_run_objects(configs, extra, RecommenderTask, RecommendationData)
    return model, data


def cli_run_objects(
    configs: Sequence[str],
    extra: Sequence[str],
    model_kind: type,
    data_kind: type,
    logger: bool = False,
) -> tuple[Any, Any, pl.Trainer]:
    """Model, data and trainer of ``lit-unlearn fit --config ...``, type-checked.

    The seed (``seed_everything``) is applied before the model is built, as the CLI does.
    ``logger=False`` turns the configs' logger off (timing, table rows that log nothing);
    ``True`` keeps it (a table run whose CSV log it reads afterwards).

    Raises:
        TypeError: The configs do not describe a ``model_kind`` and a ``data_kind``.
    """
    from lit_unlearn.cli import build_cli  # the CLI imports every experiment-facing module

    args = [a for c in configs for a in ("--config", c)] + list(extra)
    if not logger:
        args.append("--trainer.logger=false")
    cli = build_cli(args, run=False)
    if not isinstance(cli.model, model_kind) or not isinstance(cli.datamodule, data_kind):
        raise TypeError(
            f"the configs must give a {model_kind.__name__} and a {data_kind.__name__}, got "
            f"{type(cli.model).__name__} and {type(cli.datamodule).__name__}"
        )
    return cli.model, cli.datamodule, cli.trainer


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


def import_object(class_path: str, error: type[Exception] = ValueError, where: str = "") -> Any:
    """The object a dotted ``class_path`` names (``lit_unlearn.callbacks.AttrCloak``).

    Raises:
        error: The module or the name does not exist.
    """
    module, _, name = class_path.rpartition(".")
    prefix = f"{where}: " if where else ""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise error(f"{prefix}cannot import class_path {class_path!r}: {err}") from err


def build_callbacks(
    specs: Sequence[Mapping[str, Any]],
    kind: type = pl.Callback,
    error: type[Exception] = ValueError,
    message: str = "callbacks do not instantiate",
) -> list[Any]:
    """Objects of type ``kind`` from ``class_path``/``init_args`` specs.

    jsonargparse resolves each class, checks it is a ``kind``, type-checks and converts every
    argument and builds nested objects (a combiner, a block solver), as LightningCLI does for
    ``trainer.callbacks``.

    Raises:
        error: A spec names no ``kind`` class or gives it arguments its signature refuses.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--objects", type=list[kind])  # type: ignore[valid-type]
    try:
        parsed = parser.parse_object({"objects": [dict(s) for s in specs]})
        built: list[Any] = parser.instantiate_classes(parsed).objects
    except Exception as err:  # jsonargparse raises ArgumentError or its own ParserError
        shown = [dict(s) for s in specs]
        raise error(f"{message} {shown!r}: {err}") from err
    return built


def merge_init_args(base: Any, update: Any) -> Any:
    """``update`` merged into ``base``: mappings recursively, anything else replaced.

    A mapping giving another ``class_path`` than ``base``'s replaces it whole, so a row can
    swap MGDA for ``FixedWeights`` without inheriting MGDA's ``bounds``.
    """
    if not isinstance(base, Mapping) or not isinstance(update, Mapping):
        return copy.deepcopy(update)
    if "class_path" in update and update["class_path"] != base.get("class_path"):
        return copy.deepcopy(dict(update))
    merged = dict(copy.deepcopy(base))
    for key, value in update.items():
        merged[key] = merge_init_args(merged[key], value) if key in merged else value
    return merged
