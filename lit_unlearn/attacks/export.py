"""Exported user representations and attribute labels, for audits outside the package.

An audit should be repeatable by someone who trusts neither this package's attackers nor its
split. :class:`~lit_unlearn.attacks.callback.AttributeAudit` (with ``export=True``, which
``lit-unlearn audit`` sets) writes what it measured as two plain files:

* ``representations_{stage}.npz``: ``user_ids`` (the raw ids of the data, as strings, in row
  order) and ``representations`` (``float32[n, d]``, the vectors the model scores with);
* ``attributes_{stage}.csv``: a ``user_id`` column, one column per attribute holding the class
  *names* (empty where unknown) and a ``shadow`` column (1 for the users the in-package attacker
  trained on), so the shadow protocol can be repeated on the same users.

:func:`load_exported` reads such a pair, or any pair in the same layout (the ``shadow`` column
is optional, the id column may be named), and checks it: every labelled user must have a
representation, ids must be unique, features finite, and every attribute must hold at least two
classes. Users with a representation but no attribute row are unlabelled (as empty cells are).
Class codes follow the sorted class names, so the same files always give the same codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["ExportedUsers", "load_exported", "save_exported"]

#: Name of the optional column marking the shadow users.
SHADOW_COLUMN = "shadow"
#: Default name of the id column (else the CSV's first column is used).
ID_COLUMN = "user_id"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class ExportedUsers:
    """Representations and attribute labels of the same users, rows aligned.

    Attributes:
        user_ids: Raw user ids, one per row.
        representations: ``float64[n, d]``, finite.
        codes: ``attribute -> int64[n]`` class codes, ``-1`` unknown.
        classes: ``attribute -> class names`` (sorted); code ``k`` is ``classes[attribute][k]``.
        shadow: ``bool[n]`` shadow users, or ``None`` when the attributes file has no
            ``shadow`` column.
    """

    user_ids: list[str]
    representations: np.ndarray
    codes: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    shadow: np.ndarray | None

    @property
    def num_classes(self) -> dict[str, int]:
        """``attribute -> number of classes``."""
        return {name: len(names) for name, names in self.classes.items()}


def save_exported(
    representations_path: str | Path,
    attributes_path: str | Path,
    user_ids: Sequence[str],
    representations: npt.ArrayLike,
    codes: Mapping[str, npt.ArrayLike],
    classes: Mapping[str, Sequence[str]],
    shadow: npt.ArrayLike | None = None,
) -> None:
    """Write representations as ``.npz`` and attribute labels (class names) as ``.csv``.

    Args:
        representations_path: Target ``.npz``.
        attributes_path: Target ``.csv``.
        user_ids: Raw ids of the rows.
        representations: ``[n, d]`` user vectors.
        codes: ``attribute -> int[n]`` codes, ``-1`` unknown (written as an empty cell).
        classes: ``attribute -> class names``.
        shadow: Optional ``bool[n]`` shadow mask (written as a 0/1 ``shadow`` column).

    Raises:
        ValueError: Misaligned lengths, duplicate ids, or an attribute named like the id or
            shadow column.
    """
    import pandas as pd

    ids = [str(u) for u in user_ids]
    X = np.asarray(representations, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(ids):
        raise ValueError(f"representations {X.shape} must be [{len(ids)}, d], one row per user")
    if len(set(ids)) != len(ids):
        raise ValueError("user_ids hold duplicates")
    columns: dict[str, object] = {ID_COLUMN: ids}
    for name, raw in codes.items():
        if name in (ID_COLUMN, SHADOW_COLUMN):
            raise ValueError(f"an attribute may not be named {name!r} (a reserved column)")
        code = np.asarray(raw).astype(np.int64)
        if code.shape != (len(ids),):
            raise ValueError(f"attribute {name!r}: {code.shape} codes for {len(ids)} users")
        names = np.asarray([*classes[name], ""], dtype=object)
        columns[name] = names[np.where(code < 0, len(names) - 1, code)]
    if shadow is not None:
        mask = np.asarray(shadow).astype(bool)
        if mask.shape != (len(ids),):
            raise ValueError(f"shadow {mask.shape} must be ({len(ids)},)")
        columns[SHADOW_COLUMN] = mask.astype(np.int64)
    Path(representations_path).parent.mkdir(parents=True, exist_ok=True)
    Path(attributes_path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(representations_path, user_ids=np.asarray(ids, dtype=str), representations=X)
    pd.DataFrame(columns).to_csv(attributes_path, index=False)


def load_exported(
    representations_path: str | Path,
    attributes_path: str | Path,
    id_column: str | None = None,
    attributes: Sequence[str] | None = None,
) -> ExportedUsers:
    """Read and check a representations ``.npz`` and an attributes ``.csv``.

    Args:
        representations_path: ``.npz`` with ``user_ids`` ``[n]`` and ``representations``
            ``[n, d]``.
        attributes_path: ``.csv`` with an id column and one column of class names per
            attribute; empty cells are unknown; an optional ``shadow`` column (0/1, true/false)
            marks the shadow users.
        id_column: Name of the id column; default ``user_id`` if present, else the first column.
        attributes: Attribute columns to read; default every column but the id and ``shadow``.

    Returns:
        The users of the ``.npz`` in its row order, with their labels.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: A missing key or column, duplicate ids, non-finite features, users in the
            attributes file without a representation, an attribute with fewer than two classes,
            or an unreadable ``shadow`` value.
    """
    import pandas as pd

    rep_path, attr_path = Path(representations_path), Path(attributes_path)
    for path in (rep_path, attr_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    with np.load(rep_path, allow_pickle=False) as data:
        missing = [k for k in ("user_ids", "representations") if k not in data.files]
        if missing:
            raise ValueError(
                f"{rep_path}: missing array(s) {missing}; it holds {sorted(data.files)} "
                "(expected user_ids [n] and representations [n, d])"
            )
        raw_ids = np.asarray(data["user_ids"])
        X = np.asarray(data["representations"], dtype=np.float64)
    if raw_ids.ndim != 1:
        raise ValueError(f"{rep_path}: user_ids must be 1-D, got shape {raw_ids.shape}")
    if X.ndim != 2 or X.shape[0] != raw_ids.size:
        raise ValueError(
            f"{rep_path}: representations {X.shape} must be [n, d] with n = {raw_ids.size} "
            "(one row per user id)"
        )
    user_ids = [str(u) for u in raw_ids.tolist()]
    _check_unique(user_ids, f"{rep_path}: user_ids")
    bad_rows = ~np.isfinite(X).all(axis=1)
    if bad_rows.any():
        examples = [user_ids[i] for i in np.flatnonzero(bad_rows)[:5]]
        raise ValueError(
            f"{rep_path}: {int(bad_rows.sum())} user(s) have NaN/inf features (e.g. {examples}); "
            "a diverged model cannot be audited"
        )

    frame = pd.read_csv(attr_path, dtype=str, keep_default_na=False)
    if frame.shape[1] == 0:
        raise ValueError(f"{attr_path}: no columns")
    id_col = id_column or (ID_COLUMN if ID_COLUMN in frame.columns else str(frame.columns[0]))
    if id_col not in frame.columns:
        raise ValueError(f"{attr_path}: no id column {id_col!r}; columns {list(frame.columns)}")
    csv_ids = [s.strip() for s in frame[id_col].tolist()]
    _check_unique(csv_ids, f"{attr_path}: column {id_col!r}")
    row_of = {u: i for i, u in enumerate(user_ids)}
    unknown = [u for u in csv_ids if u not in row_of]
    if unknown:
        raise ValueError(
            f"{len(unknown)} user(s) of {attr_path} have no representation in {rep_path} "
            f"(e.g. {unknown[:5]}); the ids must be the same raw ids in both files"
        )
    rows = np.array([row_of[u] for u in csv_ids], dtype=np.int64)
    reserved = {id_col, SHADOW_COLUMN}
    if attributes is None:
        names = [str(c) for c in frame.columns if c not in reserved]
    else:
        names = list(attributes)
        absent = [a for a in names if a not in frame.columns or a in reserved]
        if absent:
            raise ValueError(
                f"{attr_path}: no attribute column(s) {absent}; attribute columns are "
                f"{[c for c in frame.columns if c not in reserved]}"
            )
    if not names:
        raise ValueError(f"{attr_path}: no attribute column besides {sorted(reserved)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate attribute names in {names}")

    codes: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    for name in names:
        values = np.array([s.strip() for s in frame[name].tolist()], dtype=object)
        labelled = values != ""
        class_names = sorted({str(v) for v in values[labelled]})
        if len(class_names) < 2:
            raise ValueError(
                f"attribute {name!r} of {attr_path} has {len(class_names)} class(es) "
                f"{class_names} among its labelled users; at least 2 are needed to attack it"
            )
        lookup = {c: k for k, c in enumerate(class_names)}
        code = np.full(len(user_ids), -1, dtype=np.int64)
        code[rows[labelled]] = [lookup[str(v)] for v in values[labelled]]
        codes[name], classes[name] = code, class_names

    shadow: np.ndarray | None = None
    if SHADOW_COLUMN in frame.columns and SHADOW_COLUMN not in names:
        flags = [s.strip().lower() for s in frame[SHADOW_COLUMN].tolist()]
        wrong = sorted({f for f in flags if f not in _TRUE | _FALSE})
        if wrong:
            raise ValueError(
                f"{attr_path}: column {SHADOW_COLUMN!r} holds {wrong[:5]}; use 0/1 or true/false"
            )
        shadow = np.zeros(len(user_ids), dtype=bool)
        shadow[rows] = [f in _TRUE for f in flags]
    return ExportedUsers(
        user_ids=user_ids, representations=X, codes=codes, classes=classes, shadow=shadow
    )


def _check_unique(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    dupes: list[str] = []
    for u in ids:
        if u in seen:
            dupes.append(u)
        seen.add(u)
    if dupes:
        examples = sorted(set(dupes))[:5]
        raise ValueError(f"{what} holds {len(dupes)} duplicate id(s), e.g. {examples}")
