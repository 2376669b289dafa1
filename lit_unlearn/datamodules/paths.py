"""Where relative data and config paths are looked up, so runs work from any directory.

Configs name paths relative to the repository root (``root: ../shared/datasets``,
``data: configs/data/ml100k_forgetting.yaml``). :func:`resolve_path` makes them work when a run
is launched elsewhere: a relative path is tried at these locations, and the first that exists
wins:

1. relative to the working directory (the path as given, so runs from the repository root are
   unchanged);
2. data paths only: under the datasets root named by the environment variable
   ``LIT_UNLEARN_DATA`` (:data:`DATA_ENV`). A source's ``root`` *is* a datasets root, so it
   becomes the variable's value itself; a file path (``GenericTable``) is taken relative to it;
3. relative to the repository root: the nearest ancestor of ``anchor`` (e.g. the experiment YAML
   naming the path) holding a ``configs/`` folder, then the checkout this package runs from (the
   folder holding ``configs/`` next to ``lit_unlearn/``, absent for a wheel install).

When none exists the working-directory path is returned (a source may still download into it)
together with every location tried, which the caller's error quotes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DATA_ENV", "ResolvedPath", "repository_root", "require_path", "resolve_path"]

#: Environment variable naming the datasets root (the folder holding ``ml-100k/`` & co).
DATA_ENV = "LIT_UNLEARN_DATA"

PathKind = Literal["root", "file", "config"]


def _is_repository(folder: Path) -> bool:
    return (folder / "configs").is_dir()


def repository_root(anchor: str | Path | None = None) -> Path | None:
    """The repository root of ``anchor`` (a file or folder), or of this package when None.

    For an anchor it is the nearest ancestor (the anchor's folder included) holding a
    ``configs/`` folder; for the package, the folder holding ``lit_unlearn/`` if it also holds
    ``configs/`` (a source checkout or editable install). None when there is none.
    """
    if anchor is None:
        root = Path(__file__).resolve().parents[2]
        return root if _is_repository(root) and (root / "lit_unlearn").is_dir() else None
    start = Path(anchor).expanduser().resolve()
    if not start.is_dir():
        start = start.parent
    for folder in (start, *start.parents):
        if _is_repository(folder):
            return folder
    return None


@dataclass(frozen=True)
class ResolvedPath:
    """The outcome of :func:`resolve_path`.

    Attributes:
        given: The path as configured.
        path: The first location that exists, else the working-directory one.
        found: Whether ``path`` exists.
        tried: Every location tried, in order, each with where it came from.
    """

    given: Path
    path: Path
    found: bool
    tried: tuple[str, ...]

    def describe(self) -> str:
        """``'<given>' was looked for at: <location>; <location>; ...``."""
        return f"{str(self.given)!r} was looked for at: " + "; ".join(self.tried)


def resolve_path(
    path: str | Path, kind: PathKind = "file", anchor: str | Path | None = None
) -> ResolvedPath:
    """Find a relative data or config path (see the module docstring for the order).

    Args:
        path: The configured path; absolute (or ``~``) paths are used as they are.
        kind: ``root`` (a datasets root: ``LIT_UNLEARN_DATA`` replaces it), ``file`` (a data
            file: looked for under ``LIT_UNLEARN_DATA``) or ``config`` (a config file: the
            variable does not apply).
        anchor: The file that names ``path`` (e.g. an experiment YAML); its repository root is
            tried before the package's.

    Returns:
        The chosen path and every location tried.
    """
    given = Path(path)
    expanded = given.expanduser()
    if expanded.is_absolute():
        return ResolvedPath(given, expanded, expanded.exists(), (str(expanded),))
    candidates: list[tuple[Path, str]] = [
        (expanded, f"{Path.cwd() / expanded} (working directory)")
    ]
    env = os.environ.get(DATA_ENV)
    tried_env: str | None = None
    if kind != "config":
        if env:
            base = Path(env).expanduser()
            at = base if kind == "root" else base / expanded
            candidates.append((at, f"{at} (${DATA_ENV})"))
        else:
            tried_env = f"${DATA_ENV} (not set)"
    roots = [repository_root(anchor)] if anchor is not None else []
    roots.append(repository_root())
    for root in roots:
        if root is not None:
            at = root / expanded
            candidates.append((at, f"{at} (repository root {root})"))
    seen: set[Path] = set()
    tried: list[str] = []
    chosen: Path | None = None
    for at, label in candidates:
        key = at.resolve() if at.is_absolute() else (Path.cwd() / at).resolve()
        if key in seen:
            continue
        seen.add(key)
        tried.append(label)
        if chosen is None and at.exists():
            chosen = at
    if tried_env is not None:
        tried.append(tried_env)
    if chosen is None:
        return ResolvedPath(given, expanded, False, tuple(tried))
    return ResolvedPath(given, chosen, True, tuple(tried))


def require_path(
    path: str | Path, what: str, kind: PathKind = "config", anchor: str | Path | None = None
) -> Path:
    """:func:`resolve_path` that must find an existing file.

    Raises:
        FileNotFoundError: ``<what>: no file at <path>`` and every location tried.
    """
    found = resolve_path(path, kind, anchor)
    if not found.found or not found.path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path} ({found.describe()})")
    return found.path
