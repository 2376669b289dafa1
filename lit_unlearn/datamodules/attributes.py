"""Turn raw user attributes into integer class codes for attackers and unlearning methods.

:func:`encode_attribute` maps one attribute of a users table (see
:mod:`lit_unlearn.datamodules.schema`) to ``int64`` codes, ``-1`` meaning unknown/missing, plus
the class names (code ``k`` is ``classes[k]``). Class order never depends on set or file order:
names are sorted, except ordinal age groups, which keep their natural order.

Known attributes (the raw column each needs is in brackets):

* ``gender`` [gender]: ``M``/``F``/``male``/``female`` in any case -> classes ``["F", "M"]``.
* ``age`` [age]: raw years or ML-1M group codes, grouped by ``age_scheme``:

  - ``ml1m7``: the seven MovieLens-1M groups (Under 18, 18-24, 25-34, 35-44, 45-49, 50-55,
    56+) by lower bound; ML-1M codes (1, 18, 25, ...) fall into their own group.
  - ``fedau2``: three groups ``under a`` / ``a-b`` / ``over b`` for cut points
    ``age_bins = [a, b]`` (both inclusive in the middle group); defaults to FedAU2's ML-100K bins,
    see :data:`FEDAU2_AGE_BINS`.

  Missing, non-numeric and non-positive ages are ``-1``.
* ``occupation`` [occupation]: categorical, sorted names.
* ``continent`` (alias ``location``) [country]: country name -> one of :data:`CONTINENTS`
  through a table of all ISO 3166-1 short names plus the variants Last.FM profiles use (e.g.
  ``Korea, Republic of``, ``Viet Nam``); unknown names (and Antarctica) are ``-1``.
* ``body_shape`` [body_shape]: categorical, sorted names.
* any other column of the users table: categorical over its distinct non-empty values, sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.countries import CONTINENTS, country_to_continent

#: Classes of the ``ml1m7`` age scheme, in natural order.
ML1M_AGE_GROUPS: tuple[str, ...] = (
    "Under 18",
    "18-24",
    "25-34",
    "35-44",
    "45-49",
    "50-55",
    "56+",
)
#: Lower bounds of groups 1..6 of :data:`ML1M_AGE_GROUPS` (group 0 is everything below 18).
_ML1M_AGE_LOWER: tuple[int, ...] = (18, 25, 35, 45, 50, 56)

#: FedAU2's three-group age cut points per dataset ``(a, b)``: ``< a``, ``a..b``, ``> b``.
#: ML-1M's are meant for its group codes (25 -> middle, 35 and up -> over).
FEDAU2_AGE_BINS: dict[str, tuple[float, float]] = {
    "ml-100k": (27, 38),
    "ml-1m": (25, 31),
    "kuaisar": (21, 26),
}

AGE_SCHEMES: tuple[str, ...] = ("ml1m7", "fedau2")

# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


def _value_text(value: object) -> str:
    """A raw value as stripped text; integral floats lose their ``.0`` (``3.0`` -> ``"3"``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _map_values(values: pd.Series, code_of: Callable[[str], int]) -> np.ndarray:
    """Codes per row, computing ``code_of(text)`` once per distinct non-null value."""
    index, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    table = np.array([code_of(_value_text(u)) for u in uniques] + [-1], dtype=np.int64)
    return table[index]  # index -1 (missing) picks the trailing -1


def _categorical(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    distinct = {_value_text(u) for u in pd.unique(values.dropna().astype(object))}
    classes = sorted(t for t in distinct if t)
    lookup = {c: k for k, c in enumerate(classes)}
    return _map_values(values, lambda t: lookup.get(t, -1)), classes


_GENDER = {"m": 1, "male": 1, "f": 0, "female": 0}


def _encode_gender(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    return _map_values(values, lambda t: _GENDER.get(t.casefold(), -1)), ["F", "M"]


def _age_years(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ages as floats and a mask of usable (finite, positive) ones."""
    age = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    valid = np.isfinite(age) & (age > 0)
    return age, valid


def _fmt(x: float) -> str:
    return f"{x:g}"


def _encode_age(
    values: pd.Series, age_scheme: str, age_bins: Sequence[float] | None
) -> tuple[np.ndarray, list[str]]:
    age, valid = _age_years(values)
    codes = np.full(len(age), -1, dtype=np.int64)
    if age_scheme == "ml1m7":
        codes[valid] = np.searchsorted(np.asarray(_ML1M_AGE_LOWER, float), age[valid], side="right")
        return codes, list(ML1M_AGE_GROUPS)
    if age_scheme == "fedau2":
        bins = tuple(age_bins) if age_bins is not None else FEDAU2_AGE_BINS["ml-100k"]
        if len(bins) != 2 or not float(bins[0]) < float(bins[1]):
            raise ValueError(
                f"fedau2 age_bins must be two increasing cut points [a, b], got {bins}"
            )
        a, b = float(bins[0]), float(bins[1])
        v = age[valid]
        codes[valid] = np.where(v < a, 0, np.where(v <= b, 1, 2))
        return codes, [f"under {_fmt(a)}", f"{_fmt(a)}-{_fmt(b)}", f"over {_fmt(b)}"]
    raise ValueError(f"unknown age_scheme {age_scheme!r}; known: {list(AGE_SCHEMES)}")


def _encode_continent(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    lookup = {c: k for k, c in enumerate(CONTINENTS)}

    def code_of(text: str) -> int:
        continent = country_to_continent(text)
        return -1 if continent is None else lookup[continent]

    return _map_values(values, code_of), list(CONTINENTS)


_Encoder = Callable[[pd.Series, str, "Sequence[float] | None"], tuple[np.ndarray, list[str]]]

#: Known attribute -> (raw column it reads, encoder).
_REGISTRY: dict[str, tuple[str, _Encoder]] = {
    "gender": ("gender", lambda v, s, b: _encode_gender(v)),
    "age": ("age", _encode_age),
    "occupation": ("occupation", lambda v, s, b: _categorical(v)),
    "continent": ("country", lambda v, s, b: _encode_continent(v)),
    "body_shape": ("body_shape", lambda v, s, b: _categorical(v)),
}
_ALIASES: dict[str, str] = {"location": "continent"}


def known_attributes() -> list[str]:
    """Names with a dedicated encoder (aliases included)."""
    return [*_REGISTRY, *_ALIASES]


def encode_attribute(
    users: pd.DataFrame,
    name: str,
    age_scheme: str = "ml1m7",
    age_bins: Sequence[float] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Encode one user attribute as class codes.

    Args:
        users: Users table (one row per user, attribute columns).
        name: A known attribute (see the module docstring) or any column of ``users``.
        age_scheme: ``ml1m7`` or ``fedau2`` (only used for ``age``).
        age_bins: ``fedau2`` cut points ``[a, b]``; default ``FEDAU2_AGE_BINS["ml-100k"]``.

    Returns:
        ``(codes, classes)``: ``int64[len(users)]`` codes in row order, ``-1`` for unknown, and
        the class names.

    Raises:
        KeyError: ``name`` is neither a known attribute nor a column; lists both.
        ValueError: The raw column a known attribute needs is absent (e.g. ``occupation`` on
            Last.FM), or a bad ``age_scheme``/``age_bins``.
    """
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        column, encoder = _REGISTRY[key]
        if column not in users.columns:
            if key == "continent" and "continent" in users.columns:
                return _categorical(users["continent"])  # already a continent column
            raise ValueError(
                f"attribute {name!r} needs a {column!r} column, which this users table lacks; "
                f"it has {list(users.columns)} (available attributes: "
                f"{available_attributes(users)})"
            )
        return encoder(users[column], age_scheme, age_bins)
    if name in users.columns:
        return _categorical(users[name])
    raise KeyError(
        f"unknown attribute {name!r}: known attributes are {known_attributes()}, and this users "
        f"table's columns are {list(users.columns)}"
    )


def available_attributes(users: pd.DataFrame) -> list[str]:
    """Attributes :func:`encode_attribute` accepts for this table.

    Known attributes whose raw column is present come first (registry order), then every other
    column as a generic categorical, in table order.
    """
    names = [k for k, (col, _) in _REGISTRY.items() if col in users.columns]
    if "continent" not in names and "continent" in users.columns:
        names.append("continent")
    names += [str(c) for c in users.columns if str(c) not in names]
    return names
