"""The ``LightningCLI`` subclass behind ``lit-unlearn``.

A module of its own, imported only when a subcommand runs (``import lightning`` costs seconds),
and defined at module level because ``ddp_spawn`` pickles the trainer's callbacks, and
Lightning's ``SaveConfigCallback`` holds the parser, which refers to this class: a class local
to a function cannot be pickled, so 2-process runs failed before training began.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class LitUnlearnCLI(LightningCLI):
    """Lightning's CLI plus the ``audit`` subcommand and the data -> backbone size links."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = dict(LightningCLI.subcommands())
        commands["audit"] = {"model", "datamodule"}
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for size in ("num_users", "num_items"):
            parser.link_arguments(
                f"data.{size}",
                f"model.init_args.model.init_args.{size}",
                apply_on="instantiate",
            )
