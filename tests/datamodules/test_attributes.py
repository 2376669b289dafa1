"""Attribute encoders: hand-computed codes for every scheme, and their errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.datamodules.attributes import (
    FEDAU2_AGE_BINS,
    ML1M_AGE_GROUPS,
    available_attributes,
    encode_attribute,
)
from lit_unlearn.datamodules.countries import CONTINENTS, country_to_continent


def table(**columns: Sequence[object]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.Index([f"u{i}" for i in range(n)], name="user"))


def test_gender() -> None:
    users = table(gender=["M", "f", "male", "FEMALE", " F ", "x", None, "", np.nan])
    codes, classes = encode_attribute(users, "gender")
    assert classes == ["F", "M"]
    assert codes.dtype == np.int64
    assert codes.tolist() == [1, 0, 1, 0, 0, -1, -1, -1, -1]


def test_age_ml1m7_from_years() -> None:
    ages = [17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 80, 1, 0, -3, np.nan]
    codes, classes = encode_attribute(table(age=ages), "age")
    assert classes == list(ML1M_AGE_GROUPS)
    assert classes == ["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    assert codes.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 0, -1, -1, -1]


def test_age_ml1m7_from_ml1m_codes_and_strings() -> None:
    codes, _ = encode_attribute(table(age=[1, 18, 25, 35, 45, 50, 56]), "age")
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6]
    codes, _ = encode_attribute(table(age=["22", "old", None, "", 24.5]), "age")
    assert codes.tolist() == [1, -1, -1, -1, 1]


def test_age_fedau2_default_bins_are_ml100k() -> None:
    assert FEDAU2_AGE_BINS["ml-100k"] == (27, 38)
    assert FEDAU2_AGE_BINS["ml-1m"] == (25, 31)
    codes, classes = encode_attribute(
        table(age=[17, 26, 27, 38, 39, 0, np.nan]), "age", age_scheme="fedau2"
    )
    assert classes == ["under 27", "27-38", "over 38"]
    assert codes.tolist() == [0, 0, 1, 1, 2, -1, -1]


def test_age_fedau2_ml1m_codes() -> None:
    codes, classes = encode_attribute(
        table(age=[1, 18, 25, 35, 45, 50, 56]),
        "age",
        age_scheme="fedau2",
        age_bins=FEDAU2_AGE_BINS["ml-1m"],
    )
    assert classes == ["under 25", "25-31", "over 31"]
    assert codes.tolist() == [0, 0, 1, 2, 2, 2, 2]
    codes, classes = encode_attribute(table(age=[20.5, 21, 26, 27]), "age", "fedau2", [21.0, 26.0])
    assert classes == ["under 21", "21-26", "over 26"]
    assert codes.tolist() == [0, 1, 1, 2]


def test_age_bad_scheme_or_bins() -> None:
    users = table(age=[20])
    with pytest.raises(ValueError, match="unknown age_scheme 'decades'"):
        encode_attribute(users, "age", age_scheme="decades")
    with pytest.raises(ValueError, match="two increasing cut points"):
        encode_attribute(users, "age", age_scheme="fedau2", age_bins=[30, 20])
    with pytest.raises(ValueError, match="two increasing cut points"):
        encode_attribute(users, "age", age_scheme="fedau2", age_bins=[20])


def test_occupation_sorted_classes() -> None:
    users = table(occupation=["writer", "artist", "writer", None, "doctor"])
    codes, classes = encode_attribute(users, "occupation")
    assert classes == ["artist", "doctor", "writer"]
    assert codes.tolist() == [2, 0, 2, -1, 1]


@pytest.mark.parametrize(
    ("country", "continent"),
    [
        ("United States", "North America"),
        ("United Kingdom", "Europe"),
        ("Russian Federation", "Europe"),
        ("Korea, Republic of", "Asia"),
        ("Iran, Islamic Republic of", "Asia"),
        ("Viet Nam", "Asia"),
        ("Taiwan", "Asia"),
        ("Turkey", "Asia"),
        ("Congo, the Democratic Republic of the", "Africa"),
        ("Cote D'ivoire", "Africa"),
        ("Côte d'Ivoire", "Africa"),
        ("Libyan Arab Jamahiriya", "Africa"),
        ("Brazil", "South America"),
        ("Falkland Islands (Malvinas)", "South America"),
        ("Mexico", "North America"),
        ("Virgin Islands, U.s.", "North America"),
        ("Heard Island and Mcdonald Islands", "Oceania"),
        ("New Zealand", "Oceania"),
        ("Holy See (Vatican City State)", "Europe"),
        ("Macedonia", "Europe"),
    ],
)
def test_country_to_continent(country: str, continent: str) -> None:
    assert country_to_continent(country) == continent


def test_continent_codes_and_alias() -> None:
    users = table(country=["Japan", "Peru", "Atlantis", None, "Antarctica", "germany", "Australia"])
    codes, classes = encode_attribute(users, "continent")
    assert classes == list(CONTINENTS) == sorted(CONTINENTS)
    assert codes.tolist() == [1, 5, -1, -1, -1, 2, 4]
    alias_codes, alias_classes = encode_attribute(users, "location")
    assert alias_codes.tolist() == codes.tolist() and alias_classes == classes


def test_country_table_covers_iso_names() -> None:
    from lit_unlearn.datamodules import countries

    assert len(countries._COUNTRY_TO_CONTINENT) >= 240
    assert set(countries._COUNTRY_TO_CONTINENT.values()) == set(CONTINENTS)


def test_body_shape_and_generic_columns() -> None:
    users = table(body_shape=["Small", "Large", None], zip=["02139", "10001", "02139"], n=[3, 1, 3])
    codes, classes = encode_attribute(users, "body_shape")
    assert classes == ["Large", "Small"] and codes.tolist() == [1, 0, -1]
    codes, classes = encode_attribute(users, "zip")
    assert classes == ["02139", "10001"] and codes.tolist() == [0, 1, 0]
    codes, classes = encode_attribute(users, "n")
    assert classes == ["1", "3"] and codes.tolist() == [1, 0, 1]


def test_unknown_attribute_lists_names_and_columns() -> None:
    users = table(gender=["M"], country=["Peru"])
    with pytest.raises(KeyError) as err:
        encode_attribute(users, "income")
    msg = str(err.value)
    for name in ("gender", "age", "occupation", "continent", "location", "body_shape"):
        assert repr(name) in msg
    assert "columns are ['gender', 'country']" in msg


def test_missing_raw_column() -> None:
    lastfm_like = table(gender=["m"], age=[20.0], country=["Peru"], registered=["Aug 1, 2006"])
    with pytest.raises(ValueError) as err:
        encode_attribute(lastfm_like, "occupation")
    msg = str(err.value)
    assert "needs a 'occupation' column" in msg
    assert "['gender', 'age', 'country', 'registered']" in msg


def test_available_attributes() -> None:
    users = table(gender=["m"], age=[20.0], country=["Peru"], registered=["Aug 1, 2006"])
    assert available_attributes(users) == ["gender", "age", "continent", "country", "registered"]
    ml = table(age=[24], gender=["M"], occupation=["writer"], zip=["1"])
    assert available_attributes(ml) == ["gender", "age", "occupation", "zip"]
    for name in available_attributes(users) + available_attributes(ml):
        frame = users if name in available_attributes(users) else ml
        codes, classes = encode_attribute(frame, name)
        assert len(codes) == len(frame) and codes.max() < len(classes)


def test_deterministic_regardless_of_row_order() -> None:
    a = table(occupation=["b", "a", "c"])
    b = table(occupation=["c", "b", "a"])
    assert encode_attribute(a, "occupation")[1] == encode_attribute(b, "occupation")[1]
