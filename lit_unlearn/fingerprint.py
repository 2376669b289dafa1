"""What a checkpoint was trained on: a fingerprint of its data and model, checked on every load.

Before this, only the user/item id lists were compared when a checkpoint was loaded: a model
trained on one synthetic seed was tested on another (same ids, other interactions) and reported
metrics of data it never saw, and a checkpoint of another size failed with PyTorch's raw
"size mismatch" that never named the checkpoint. Now every checkpoint a task saves carries

* ``data``: what the DataModule's :meth:`fingerprint` returns, split into ``content`` (digests
  of the ids, interactions, attribute codes or images: what must be equal) and ``config``
  (source, filters and split settings: shown to explain a difference, never compared alone, so
  a setting that does not change the data, e.g. a moved data folder, never refuses a model);
* ``model``: the backbone's class and constructor settings (the architecture).

:func:`check_checkpoint` compares them with the current data and model wherever a checkpoint is
loaded (``--ckpt_path`` of fit/validate/test, the unlearning callbacks' ``checkpoint``, audit)
and raises :class:`CheckpointMismatchError` naming the checkpoint, each differing field, and the
stored and current values. Parameter shapes are compared from the checkpoint's ``state_dict``
itself, so even a checkpoint saved before fingerprints existed (accepted with a warning) gets a
clear error instead of "size mismatch".
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "FINGERPRINT_KEY",
    "CheckpointMismatchError",
    "UnreadableCheckpointError",
    "check_checkpoint",
    "data_fingerprint",
    "describe_object",
    "digest",
    "make_fingerprint",
    "model_fingerprint",
    "read_checkpoint",
]

#: Key of the fingerprint in a Lightning checkpoint dict.
FINGERPRINT_KEY = "lit_unlearn_fingerprint"
_VERSION = 1

_Scalar = int | float | str | bool | None


class CheckpointMismatchError(ValueError):
    """A checkpoint was loaded with data or a model it was not trained with."""


# ---------------------------------------------------------------------- building blocks
def digest(*parts: Tensor | np.ndarray | str | list[str]) -> str:
    """A short SHA-256 of arrays (dtype, shape and bytes) and strings, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            h.update(b"s" + part.encode())
        elif isinstance(part, list):
            h.update(b"l" + "\x1f".join(map(str, part)).encode())
        else:
            array = part.detach().cpu().numpy() if isinstance(part, Tensor) else part
            array = np.ascontiguousarray(array)
            h.update(f"a{array.dtype.str}{array.shape}".encode())
            h.update(array.tobytes())
    return h.hexdigest()[:16]


#: Attribute names that locate files rather than define data: a moved folder is the same data.
_LOCATION_WORDS = ("root", "dir", "path", "file", "folder", "url", "download", "cache")


def describe_object(obj: object) -> str:
    """``Class(a=1, b='x')`` from public scalar attributes (file locations left out)."""
    fields = {
        k: v
        for k, v in sorted(vars(obj).items())
        if not k.startswith("_")
        and isinstance(v, _Scalar)
        and not any(word in k.lower() for word in _LOCATION_WORDS)
    }
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(obj).__qualname__}({inner})"


def data_fingerprint(datamodule: object | None) -> dict[str, dict[str, str]] | None:
    """The DataModule's ``fingerprint()`` (``{"content": ..., "config": ...}``), or None."""
    fingerprint = getattr(datamodule, "fingerprint", None)
    if not callable(fingerprint):
        return None
    result = fingerprint()
    assert isinstance(result, dict) and set(result) == {"content", "config"}
    return result


def _is_init_only(name: str) -> bool:
    """Constructor settings that only decide the initial draw: loading weights replaces it."""
    return name.startswith("init") or name.endswith("init_std")


def model_fingerprint(backbone: nn.Module) -> dict[str, Any]:
    """The backbone's class and constructor settings (those it keeps as same-named attributes)."""
    config: dict[str, str] = {}
    try:
        params = inspect.signature(type(backbone).__init__).parameters
    except (TypeError, ValueError):  # a C-implemented or exotic __init__
        params = {}  # type: ignore[assignment]
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if _is_init_only(name) or not hasattr(backbone, name):
            continue
        value = getattr(backbone, name)
        if isinstance(value, (list, tuple)) and all(isinstance(v, _Scalar) for v in value):
            config[name] = repr(list(value))
        elif isinstance(value, _Scalar):
            config[name] = repr(value)
    return {
        "backbone": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "config": config,
    }


def make_fingerprint(backbone: nn.Module, datamodule: object | None) -> dict[str, Any]:
    """The fingerprint a task stores in its checkpoints (``checkpoint[FINGERPRINT_KEY]``)."""
    return {
        "version": _VERSION,
        "model": model_fingerprint(backbone),
        "data": data_fingerprint(datamodule),
    }


# ---------------------------------------------------------------------- reading
class UnreadableCheckpointError(ValueError):
    """A file given as a checkpoint is damaged, of another format, or not a Lightning
    checkpoint. The message names the file; ``path`` keeps it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


#: What ``torch.load`` raises on a file that is not a checkpoint or is damaged: RuntimeError
#: from the zip reader on a truncated archive ("failed finding central directory"),
#: UnpicklingError / EOFError on a damaged or cut pickle, and Attribute / Import / Type / Key /
#: IndexError for a pickle whose bytes name a class, module or storage that does not exist
#: (fuzzing found "Can't get attribute 'NA,1000,...' on torch._utils"); MemoryError /
#: OverflowError for a damaged storage record asking for an absurd allocation (fuzzing found a
#: two-byte overwrite that does).
UNREADABLE_CHECKPOINT_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError,
    MemoryError,
    OverflowError,
    EOFError,
    RuntimeError,
    ValueError,
    OSError,
    AttributeError,
    ImportError,
    TypeError,
    KeyError,
    IndexError,
)


def read_checkpoint(
    path: str | os.PathLike[str], *, what: str = "checkpoint", state_dict: bool = True
) -> dict[str, Any]:
    """``torch.load`` a checkpoint onto the CPU, with a clear error for anything else.

    Checkpoints hold the data module's state and the run's settings (not only tensors), so
    they are read with ``weights_only=False``: read only checkpoints you trust.

    Args:
        path: The file.
        what: What the file was meant to be, for the messages ("checkpoint to unlearn").
        state_dict: Require a ``state_dict`` entry (a Lightning checkpoint).

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        UnreadableCheckpointError: The file is not a readable checkpoint (damaged, truncated,
            another format), is not a dict, or lacks its ``state_dict``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist or is not a file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except UNREADABLE_CHECKPOINT_ERRORS as err:
        raise UnreadableCheckpointError(
            f"{os.fspath(path)}: not a readable {what} ({type(err).__name__}: {err})",
            os.fspath(path),
        ) from err
    if not isinstance(ckpt, dict) or (state_dict and not isinstance(ckpt.get("state_dict"), dict)):
        raise UnreadableCheckpointError(
            f"{os.fspath(path)}: not a {what}: expected a dict with a 'state_dict' as Lightning "
            f"saves, found {type(ckpt).__name__}"
            + (f" with keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, dict) else ""),
            os.fspath(path),
        )
    return ckpt


# ---------------------------------------------------------------------- the check
def check_checkpoint(
    checkpoint: Mapping[str, Any],
    module: nn.Module,
    datamodule: object | None,
    path: str | os.PathLike[str] | None,
) -> None:
    """Refuse a checkpoint that does not belong to ``module``'s model or ``datamodule``'s data.

    Args:
        checkpoint: The loaded checkpoint dict (``state_dict`` and, if saved by this version,
            the fingerprint).
        module: The task about to receive the weights (its ``model`` is the backbone).
        datamodule: The current data (None: only the model is checked).
        path: Where the checkpoint came from, for the message.

    Raises:
        CheckpointMismatchError: Parameter shapes, backbone class or settings, or the data's
            content differ; the message names each field with its stored and current values.
    """
    where = str(path) if path is not None else "the checkpoint"
    problems = _shape_problems(checkpoint.get("state_dict"), module)
    stored = checkpoint.get(FINGERPRINT_KEY)
    if stored is None:
        if problems:
            _raise(where, problems, [])
        warnings.warn(
            f"{where} holds no data/model fingerprint (saved before lit_unlearn stored one): "
            "it is loaded, but cannot be checked against this data and model beyond its "
            "user/item order and parameter shapes",
            UserWarning,
            stacklevel=2,
        )
        return
    backbone = getattr(module, "model", None)
    if isinstance(backbone, nn.Module):
        problems += _model_problems(stored.get("model") or {}, model_fingerprint(backbone))
    current_data = data_fingerprint(datamodule)
    stored_data = stored.get("data")
    data_problems = (
        _data_problems(stored_data, current_data)
        if current_data is not None and stored_data is not None
        else []
    )
    if problems or data_problems:
        _raise(where, problems, data_problems)


def _raise(where: str, model: list[str], data: list[str]) -> None:
    # Both lists in one message: a different data size shows up as both (the linked
    # num_users) and the data side says why.
    what = " and ".join(w for w, p in (("model", model), ("data", data)) if p)
    listed = "\n".join(f"  - {p}" for p in [*model, *data])
    raise CheckpointMismatchError(
        f"checkpoint {where} does not belong to this {what} (stored vs current):\n{listed}\n"
        f"Fix: use the {what} config the checkpoint was trained with, or a checkpoint trained "
        f"with this {what}."
    )


def _shape_problems(state_dict: object, module: nn.Module) -> list[str]:
    if not isinstance(state_dict, Mapping):
        return []
    current = module.state_dict()
    problems = []
    for name, tensor in state_dict.items():
        mine = current.get(name)
        if isinstance(tensor, Tensor) and mine is not None and tensor.shape != mine.shape:
            problems.append(
                f"parameter {name}: stored shape {list(tensor.shape)}, current {list(mine.shape)}"
            )
    return problems


def _model_problems(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    problems = []
    if stored.get("backbone") not in (None, current["backbone"]):
        problems.append(f"backbone: stored {stored['backbone']}, current {current['backbone']}")
        return problems  # the settings of two different classes do not compare
    stored_config = stored.get("config") or {}
    for key in sorted(set(stored_config) & set(current["config"])):
        if stored_config[key] != current["config"][key]:
            problems.append(
                f"backbone setting {key}: stored {stored_config[key]}, current "
                f"{current['config'][key]}"
            )
    return problems


def _data_problems(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    # Only fields both sides have are compared: a data-free run has no interactions, a run
    # that encodes fewer attributes checks those it has.
    stored_content, current_content = stored.get("content") or {}, current["content"]
    differing = [
        f"{key}: stored {stored_content[key]}, current {current_content[key]}"
        for key in sorted(set(stored_content) & set(current_content))
        if stored_content[key] != current_content[key]
    ]
    if not differing:
        return []
    stored_config, current_config = stored.get("config") or {}, current["config"]
    differing += [
        f"{key} (setting): stored {stored_config[key]}, current {current_config[key]}"
        for key in sorted(set(stored_config) & set(current_config))
        if stored_config[key] != current_config[key]
    ]
    return differing
