"""What consumers may ask of a DataModule, as explicit protocols instead of ``hasattr`` probes.

Tasks, methods and audits state which protocol they need and check it with
:func:`require_data`, which names every missing member (and never triggers a property, so an
unset-up DataModule is not loaded by the check).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

from lit_unlearn._structural import missing_members
from lit_unlearn.datamodules.containers import UserAttributes

__all__ = [
    "AttributeData",
    "DataMode",
    "ForgettingRequestData",
    "InteractionData",
    "ModalData",
    "UserIndexData",
    "conforms",
    "require_data",
]

#: ``data_dependent``: interactions are read; ``data_free``: model and attributes only.
DataMode = Literal["data_dependent", "data_free"]


@runtime_checkable
class ModalData(Protocol):
    """A DataModule that says whether it serves interactions (``mode``)."""

    mode: DataMode


@runtime_checkable
class UserIndexData(Protocol):
    """A DataModule that reads the trained model's user order from a file (data-free mode)."""

    user_index: str | None


@runtime_checkable
class AttributeData(Protocol):
    """Users' attribute labels (attacks, attribute unlearning). Works in data-free mode."""

    @property
    def user_attributes(self) -> UserAttributes: ...


@runtime_checkable
class InteractionData(Protocol):
    """Training interactions and the evaluation protocols of each stage."""

    mode: DataMode

    @property
    def train_graph(self) -> Tensor: ...

    def eval_protocols(self, stage: str) -> list[str]: ...


@runtime_checkable
class ForgettingRequestData(Protocol):
    """A forgetting request: the pairs to forget and those that remain."""

    train_on: Literal["all", "remaining"]

    @property
    def forget_pairs(self) -> Tensor: ...

    @property
    def remaining_pairs(self) -> Tensor: ...


def conforms(datamodule: object, protocol: type) -> bool:
    """Whether ``datamodule`` has every member of ``protocol`` (no property is evaluated)."""
    return datamodule is not None and not missing_members(datamodule, protocol)


def require_data(datamodule: object, protocol: type, who: str) -> Any:
    """``datamodule`` itself, or a TypeError naming what it lacks of ``protocol``.

    Annotate the result with the protocol (``dm: AttributeData = require_data(...)``): mypy
    accepts no protocol class where a ``type[T]`` is expected.
    """
    if datamodule is None:
        raise TypeError(f"{who} needs a DataModule providing {protocol.__name__}; got none")
    missing = missing_members(datamodule, protocol)
    if missing:
        raise TypeError(
            f"{who} needs a DataModule providing {protocol.__name__} "
            f"(lit_unlearn.datamodules.protocols); {type(datamodule).__name__} lacks {missing}"
        )
    return datamodule
