"""The contiguous-id order a model was trained with: what data-free mode needs of the data.

Stored in every checkpoint (Lightning saves the DataModule's ``state_dict`` under its class
name) or in a JSON file, so a data-free run maps its users to the model's rows without opening
an interaction file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["STATE_KEY", "UserIndex"]

#: Key of the DataModule state in a Lightning checkpoint: Lightning files it under the class's
#: ``__qualname__``, here :class:`~lit_unlearn.datamodules.recommendation.RecommendationData`'s
#: (kept as a string so this module does not import the DataModule; a test checks they agree).
STATE_KEY = "RecommendationData"


@dataclass(frozen=True)
class UserIndex:
    """The contiguous-id order a model was trained with (raw ids of user/item ``k``)."""

    user_ids: list[str]
    item_ids: list[str]

    @classmethod
    def load(cls, path: str | Path) -> UserIndex:
        """Read an index from a Lightning checkpoint or a JSON file written by :meth:`save`.

        Raises:
            FileNotFoundError: No such file.
            ValueError: The file holds no user index.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"user index {path} does not exist")
        if path.suffix == ".json":
            state: Any = json.loads(path.read_text())
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            state = ckpt.get(STATE_KEY)
            if state is None:
                raise ValueError(
                    f"{path} holds no {STATE_KEY} state: was it saved by a fit with this "
                    "DataModule? Write one with RecommendationData.save_index()."
                )
        try:
            return cls(
                user_ids=list(map(str, state["user_ids"])),
                item_ids=list(map(str, state["item_ids"])),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: no user_ids/item_ids in the stored index") from err

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"user_ids": self.user_ids, "item_ids": self.item_ids}))
