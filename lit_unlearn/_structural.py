"""Structural checks: which members of a ``typing.Protocol`` an object lacks, named one by one."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

__all__ = ["missing_members", "protocol_members"]


def protocol_members(protocol: type) -> list[str]:
    """Public attribute, property and method names a protocol class declares (bases included)."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol, Any) or not getattr(klass, "_is_protocol", False):
            continue
        names += [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")]
        names += [n for n in vars(klass) if not n.startswith("_")]
    return list(dict.fromkeys(names))


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks.

    Looked up with :func:`inspect.getattr_static`, so no property runs: checking a DataModule
    that is not set up yet does not load its data (``isinstance`` on a runtime-checkable
    protocol evaluates properties on Python 3.11).
    """
    missing = []
    for name in protocol_members(protocol):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            # torch.nn.Module keeps submodules, parameters and buffers in registries that
            # __getattr__ reads, not in the instance dict.
            registries = ("_modules", "_parameters", "_buffers")
            if not any(name in (vars(obj).get(r) or {}) for r in registries if hasattr(obj, r)):
                missing.append(name)
    return missing
