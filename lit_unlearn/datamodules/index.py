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

from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.fingerprint import UnreadableCheckpointError, read_checkpoint

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
            DataFormatError: The file is unreadable (not JSON / not a checkpoint, truncated) or
                holds no valid user index; the message names the file and, for JSON, the line
                and the field.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"user index {path} does not exist")
        state: Any
        if path.suffix == ".json":
            state = _read_json(path)
            where = "the JSON object"
        else:
            state = _read_checkpoint(path)
            where = f"the checkpoint's {STATE_KEY!r} entry"
        if not isinstance(state, dict):
            raise DataFormatError(
                f"{path}: {where} must be a mapping with user_ids and item_ids, got "
                f"{type(state).__name__}",
                path=path,
            )
        return cls(
            user_ids=_ids(state, "user_ids", path),
            item_ids=_ids(state, "item_ids", path),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"user_ids": self.user_ids, "item_ids": self.item_ids}))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"{path}: not a UTF-8 JSON user index (byte {err.start + 1}: {err.reason})", path=path
        ) from err
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path}: line {err.lineno}: not valid JSON ({err.msg} at column {err.colno}); "
            'expected {"user_ids": [...], "item_ids": [...]} as written by '
            "RecommendationData.save_index()",
            path=path,
            line=err.lineno,
        ) from err
    except RecursionError as err:
        raise DataFormatError(f"{path}: not valid JSON (nested too deeply)", path=path) from err


def _read_checkpoint(path: Path) -> Any:
    try:
        ckpt = read_checkpoint(path, state_dict=False)
    except UnreadableCheckpointError as err:
        raise DataFormatError(
            f"{err}; a user index is a Lightning checkpoint or a .json file written by "
            "RecommendationData.save_index()",
            path=path,
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get(STATE_KEY) is None:
        raise DataFormatError(
            f"{path} holds no {STATE_KEY} state: was it saved by a fit with this "
            "DataModule? Write one with RecommendationData.save_index().",
            path=path,
        )
    return ckpt[STATE_KEY]


def _ids(state: dict[Any, Any], field: str, path: Path) -> list[str]:
    """One id list of a stored index: text or integers, unique."""
    if field not in state:
        raise DataFormatError(
            f"{path}: no {field} in the stored index (keys: {sorted(map(str, state))})",
            path=path,
            field=field,
        )
    values = state[field]
    if not isinstance(values, list | tuple):
        raise DataFormatError(
            f"{path}: {field} must be a list of ids, got {type(values).__name__}",
            path=path,
            field=field,
        )
    out: list[str] = []
    for k, value in enumerate(values):
        # bool is an int subclass, but True is no id; floats would print as "1.0".
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataFormatError(
                f"{path}: {field}[{k}] must be a text or integer id, got {value!r}",
                path=path,
                field=f"{field}[{k}]",
            )
        out.append(str(value))
    seen: set[str] = set()
    for dup in out:
        if dup not in seen:
            seen.add(dup)
            continue
        raise DataFormatError(
            f"{path}: {field} lists id {dup!r} more than once (row order would be ambiguous)",
            path=path,
            field=field,
        )
    return out
