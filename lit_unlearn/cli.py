"""``lit-unlearn``: the LightningCLI entry point.

Subcommands ``fit``, ``validate``, ``test``, ``predict`` (Lightning's) and ``audit``
(attribute inference on a saved model). Model and data are chosen by ``class_path`` in YAML
(``configs/``); the backbone's ``num_users``/``num_items`` are linked from the data.
"""

from __future__ import annotations

import sys
from typing import Any


def build_cli(args: list[str] | None = None, run: bool = True) -> Any:
    """Parse ``args`` (default ``sys.argv[1:]``), run the subcommand if ``run``, return the CLI."""
    # Imported here: `import lightning` alone costs ~4 s, keep `lit-unlearn --version` instant.
    from lightning.pytorch import LightningDataModule, LightningModule

    from lit_unlearn.cli_app import LitUnlearnCLI
    from lit_unlearn.trainer import UnlearnTrainer

    return LitUnlearnCLI(
        LightningModule,
        LightningDataModule,
        trainer_class=UnlearnTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={"default_env": False},
    )


def main(args: list[str] | None = None) -> None:
    """Console-script entry point ``lit-unlearn``."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] in (["--version"], ["-V"]):
        from lit_unlearn import __version__

        print(f"lit-unlearn {__version__}")
        return
    _show_data_summaries()
    build_cli(args)


def _show_data_summaries() -> None:
    """Print what loading kept and dropped (``lit_unlearn.datamodules`` INFO) on the console.

    Python shows only warnings by default; the loaders log a summary of every load (rows read,
    rows and users dropped and why) at INFO, which a user of the command line should see. A
    handler already configured by the caller (an application embedding the CLI) is left alone.
    """
    import logging

    log = logging.getLogger("lit_unlearn.datamodules")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)


if __name__ == "__main__":
    main()
