"""Fuzzed inputs for every data reader, shared by the hypothesis tests and the fuzz counts.

Each reader starts from a small valid sample of its files and draws a list of mutations:
truncation, separator swaps, stray bytes and other encodings, whole lines of odd tokens (numeric
extremes, ids that spell one number two ways, ISO dates among epoch numbers, JSON fragments),
duplicated and deleted lines. JSON lines, Parquet and the user index also draw whole documents
of arbitrary values. :func:`run_reader` writes the input to a folder, runs the reader (and, for
recommender sources, the preprocessing that joins its two tables) and returns
``"loaded"`` (the tables satisfy the schema) or ``"clear error"`` (a :class:`DataFormatError`
naming the file, or a preprocessing ``ValueError`` naming its stage). Anything else propagates:
that is a bug the fuzz found.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hypothesis import strategies as st

from lit_unlearn.datamodules.index import STATE_KEY, UserIndex
from lit_unlearn.datamodules.preprocess import preprocess
from lit_unlearn.datamodules.schema import INTERACTION_COLUMNS, DataFormatError
from lit_unlearn.datamodules.sources import (
    GenericTable,
    LastFM1K,
    LastFM360K,
    ModCloth,
    MovieLens1M,
    MovieLens100K,
)
from lit_unlearn.datamodules.sources.base import DataSource

#: Tokens a mutation writes into a file: separators, quotes, control and stray bytes, numeric
#: extremes, ambiguous ids, dates, JSON fragments.
TOKENS: tuple[bytes, ...] = tuple(
    t if isinstance(t, bytes) else t.encode("utf-8")
    for t in (
        "",
        " ",
        "\t",
        ",",
        "|",
        "::",
        ";",
        "\n",
        "\r\n",
        "\r",
        '"',
        "'",
        "\\",
        "\x00",
        b"\xe9",
        b"\xff",
        b"\xc3",
        "é",
        "-1",
        "0",
        "007",
        "7",
        "1.0",
        "1.5",
        "+5",
        "5",
        "1e30",
        "-1e30",
        "1e400",
        "inf",
        "-inf",
        "nan",
        "NA",
        "99999999999999999999",
        "9223372036854775808",
        "-9223372036854775809",
        "1000",
        "1500000000",
        "2009-05-04T23:08:57Z",
        "2009-05-04",
        "99999-01-01",
        "0000-00-00",
        "null",
        "true",
        "{",
        "}",
        "[",
        "]",
        "{}",
        "[]",
        '{"user_id": 1}',
        '{"user": 1.0, "item": 1e400}',
        "[" * 50,
    )
)

#: JSON values for fields of JSON documents (ids, ratings, timestamps and nested junk).
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 7, 1.0, 1.5, -1, 5, 1e30, 1500000000]),
    st.sampled_from(
        ["", " ", "007", "7", "1.0", "nan", "inf", "1000", "2009-05-04", "2009-05-04T23:08:57Z"]
    ),
    st.text(max_size=6),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@dataclass(frozen=True)
class Mutation:
    """One change to one file of a sample (see :func:`mutations`)."""

    kind: str
    file: int
    at: float = 0.0
    tokens: tuple[bytes, ...] = ()
    sep: bytes = b","


def _apply(data: bytes, m: Mutation) -> bytes:
    pos = int(m.at * len(data))
    lines = data.split(b"\n")
    row = min(int(m.at * len(lines)), max(len(lines) - 1, 0))
    if m.kind == "truncate":
        return data[:pos]
    if m.kind == "insert":
        return data[:pos] + b"".join(m.tokens) + data[pos:]
    if m.kind == "overwrite" and data:
        token = b"".join(m.tokens)
        return data[:pos] + token + data[pos + len(token) :]
    if m.kind == "line":
        lines[row] = m.sep.join(m.tokens)
        return b"\n".join(lines)
    if m.kind == "add_line":
        lines.insert(row, m.sep.join(m.tokens))
        return b"\n".join(lines)
    if m.kind == "duplicate":
        lines.insert(row, lines[row])
        return b"\n".join(lines)
    if m.kind == "delete":
        del lines[row]
        return b"\n".join(lines)
    if m.kind == "swap_sep" and m.tokens:
        return data.replace(m.tokens[0], m.sep)
    if m.kind == "utf16":
        return data.decode("utf-8", errors="replace").encode("utf-16")
    if m.kind == "latin1":
        return data.decode("utf-8", errors="replace").encode("latin-1", errors="replace")
    return data


def mutations(n_files: int) -> st.SearchStrategy[list[Mutation]]:
    """Lists of up to 4 mutations of a sample with ``n_files`` files."""
    seps = st.sampled_from([b",", b"\t", b"|", b"::", b";", b" ", b""])
    one = st.builds(
        Mutation,
        kind=st.sampled_from(
            [
                "truncate",
                "insert",
                "overwrite",
                "line",
                "line",
                "add_line",
                "duplicate",
                "delete",
                "swap_sep",
                "utf16",
                "latin1",
            ]
        ),
        file=st.integers(0, n_files - 1),
        at=st.floats(0.0, 1.0),
        tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=7).map(tuple),
        sep=seps,
    )
    return st.lists(one, min_size=1, max_size=4)


@dataclass
class FuzzInput:
    """Files to write (path relative to the folder -> bytes) and a description."""

    files: dict[str, bytes]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Valid samples
# ---------------------------------------------------------------------------------------------

ML100K_DATA = (
    b"1\t10\t4\t881250949\n1\t11\t5\t881250950\n2\t10\t3\t891717742\n2\t12\t1\t878887116\n"
)
ML100K_USER = b"1|24|M|technician|85711\n2|53|F|other|94043\n"
ML1M_RATINGS = b"1::10::4::978300760\n1::11::5::978302109\n2::10::3::978301968\n"
ML1M_USERS = b"1::F::1::10::48067\n2::M::56::16::70072\n"
LFM1K_PLAYS = (
    b"user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tM\n"
    b"user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8"
    b"\t\xe5\x9d\x82\xe6\x9c\xac\t\tHibari\n"
    b"user_000002\t2009-05-03T15:48:25Z\t\tM\xc3\xb6tley Cr\xc3\xbce\t\tKickstart\n"
)
LFM1K_PROFILE = (
    b"#id\tgender\tage\tcountry\tregistered\n"
    b"user_000001\tm\t\tJapan\tAug 13, 2006\n"
    b"user_000002\tf\t25\tPeru\tFeb 24, 2006\n"
)
LFM360K_PLAYS = (
    b"00000c289a1829a808ac09c00daf10bc3c4e223b\t3bd73256-3905-4f3a-97e2-8b341527f805"
    b"\tbetty blowtorch\t2137\n"
    b"00000c289a1829a808ac09c00daf10bc3c4e223b\t\tdie \xc3\x84rzte\t1099\n"
    b"00001411dc427966b17297bf4d69e7e193135d89\t\tthe most serene republic\t897\n"
)
LFM360K_PROFILE = (
    b"00000c289a1829a808ac09c00daf10bc3c4e223b\tf\t22\tGermany\tFeb 1, 2007\n"
    b"00001411dc427966b17297bf4d69e7e193135d89\tf\t\tCanada\tDec 4, 2007\n"
)
MODCLOTH_JSON = b"".join(
    json.dumps(
        {"item_id": i, "user_id": u, "rating": r, "timestamp": t, "user_attr": body}
    ).encode()
    + b"\n"
    for i, u, r, t, body in (
        ("7443", "Alex", 4, "2010-01-21 08:00:00+00:00", "Small"),
        ("7444", "Alex", 5, "2010-01-22 08:00:00+00:00", "Small"),
        ("7443", "carol", 3, "2010-01-27 08:00:00+00:00", None),
    )
)
MODCLOTH_CSV = (
    b"item_id,user_id,rating,timestamp,size,fit,user_attr,model_attr,category,brand,year,split\n"
    b"7443,Alex,4,2010-01-21 08:00:00+00:00,,,Small,Small,Dresses,,2012,0\n"
    b'7443,carol,3,2010-01-27 08:00:00+00:00,,,,Small,Dresses,"Brand, Inc.",2012,0\n'
    b"7444,Alex,5,2010-02-01 08:00:00+00:00,3.0,Just right,Small,Small&Large,Tops,,2012,1\n"
)
GENERIC_CSV = b"user,item,rating,timestamp\n1,a,4,100\n1,b,5,200\n2,a,3,150\n2,c,1,300\n"
GENERIC_USERS_CSV = b"user,gender,age\n1,F,31\n2,M,40\n"
GENERIC_DAT = b"1::10::4::978300760\n1::11::5::978302109\n2::10::3::978301968\n"
GENERIC_JSONL = (
    b'{"user": 1, "item": "a", "rating": 4, "timestamp": "2009-05-04T23:08:57Z"}\n'
    b'{"user": 1, "item": "b", "rating": 5, "timestamp": "2009-05-05T23:08:57Z"}\n'
    b'{"user": 2, "item": "a", "rating": null, "timestamp": "2009-05-06T23:08:57Z"}\n'
)
INDEX_JSON = json.dumps({"user_ids": ["1", "2", "3"], "item_ids": ["a", "b"]}).encode()


def _checkpoint_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "state_dict": {"w": torch.zeros(2)},
            STATE_KEY: {"user_ids": ["1", "2"], "item_ids": ["a"]},
        },
        buf,
    )
    return buf.getvalue()


def _png_bytes(seed: int, fmt: str = "PNG") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A reader under fuzz: its valid sample and how to run it on a folder."""

    name: str
    sample: Callable[[], dict[str, bytes]]
    run: Callable[[Path], str]
    #: Extra whole-document strategy (JSON lines, Parquet, index), or None.
    documents: Callable[[], st.SearchStrategy[dict[str, bytes]]] | None = None


def _check_tables(source: DataSource, users_needed: bool = True) -> str:
    inter = source.load_interactions()
    users = source.load_users()
    assert tuple(inter.columns) == INTERACTION_COLUMNS, inter.columns
    assert inter["rating"].dtype == np.float64 and inter["timestamp"].dtype == np.int64
    rating = inter["rating"].to_numpy()
    assert not np.isinf(rating).any(), "infinite rating accepted"
    assert all(isinstance(v, str) and v and v == v.strip() for v in inter["user"])
    assert all(isinstance(v, str) and v and v == v.strip() for v in inter["item"])
    assert users.index.is_unique and all(isinstance(v, str) for v in users.index)
    if len(users) or users_needed:
        preprocess(inter, users if len(users) else None, rating_threshold=None, user_k=1, item_k=1)
    return "loaded"


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _json_rows(keys: list[str]) -> st.SearchStrategy[bytes]:
    row = st.fixed_dictionaries({k: JSON_VALUES for k in keys}, optional={"x": JSON_VALUES})
    return st.lists(row, min_size=0, max_size=6).map(
        lambda rows: b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    )


def _parquet_documents() -> st.SearchStrategy[dict[str, bytes]]:
    columns = {
        "int": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(allow_nan=True, allow_infinity=True),
        "text": st.sampled_from(["1", "007", "7", "1.0", "a", "", " ", "2009-05-04", "1e30"]),
        "datetime": st.datetimes(
            min_value=pd.Timestamp("1700-01-01").to_pydatetime(),
            max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
        ),
    }

    @st.composite
    def document(draw: st.DrawFn) -> dict[str, bytes]:
        n = draw(st.integers(0, 6))
        frame = {}
        for name in ("user", "item", "rating", "timestamp"):
            kind = draw(st.sampled_from(sorted(columns)))
            values = draw(st.lists(columns[kind], min_size=n, max_size=n))
            if kind in ("text", "datetime") and draw(st.booleans()):
                values = [None if i % 3 == 0 else v for i, v in enumerate(values)]
            frame[name] = pd.Series(values, dtype="datetime64[ns]" if kind == "datetime" else None)
        buf = io.BytesIO()
        pd.DataFrame(frame).to_parquet(buf)
        users = io.BytesIO()
        pd.DataFrame({"user": [1, 2], "gender": ["F", "M"]}).to_parquet(users)
        return {"i.parquet": buf.getvalue(), "u.parquet": users.getvalue()}

    return document()


def _parquet_sample() -> dict[str, bytes]:
    buf = io.BytesIO()
    pd.DataFrame(
        {
            "user": [1.0, 2.0, 1.0],
            "item": [10, 20, 20],
            "rating": [1.0, 2.0, 5.0],
            "timestamp": [5, 6, 7],
        }
    ).to_parquet(buf)
    users = io.BytesIO()
    pd.DataFrame({"user": [1, 2], "gender": ["F", "M"]}).to_parquet(users)
    return {"i.parquet": buf.getvalue(), "u.parquet": users.getvalue()}


def _index_run(name: str) -> Callable[[Path], str]:
    def run(root: Path) -> str:
        index = UserIndex.load(root / name)
        assert all(isinstance(v, str) for v in index.user_ids + index.item_ids)
        assert len(set(index.user_ids)) == len(index.user_ids)
        return "loaded"

    return run


def _images_run(root: Path) -> str:
    from lit_unlearn.datamodules.images.folder import ImageFolder

    for split in ("train", "test"):
        ImageFolder(str(root / "img"), image_size=6).load(split)
    return "loaded"


READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader(
            "ml-100k",
            lambda: {"ml-100k/u.data": ML100K_DATA, "ml-100k/u.user": ML100K_USER},
            lambda root: _check_tables(MovieLens100K(str(root))),
        ),
        Reader(
            "ml-1m",
            lambda: {"ml-1m/ratings.dat": ML1M_RATINGS, "ml-1m/users.dat": ML1M_USERS},
            lambda root: _check_tables(MovieLens1M(str(root))),
        ),
        Reader(
            "lastfm-1k",
            lambda: {
                "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv": LFM1K_PLAYS,
                "lastfm-dataset-1K/userid-profile.tsv": LFM1K_PROFILE,
            },
            lambda root: _check_tables(LastFM1K(str(root))),
        ),
        Reader(
            "lastfm-360k",
            lambda: {
                "lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv": LFM360K_PLAYS,
                "lastfm-dataset-360K/usersha1-profile.tsv": LFM360K_PROFILE,
            },
            lambda root: _check_tables(LastFM360K(str(root))),
        ),
        Reader(
            "modcloth-jsonl",
            lambda: {"m.json": MODCLOTH_JSON},
            lambda root: _check_tables(ModCloth(str(root), file="m.json")),
            lambda: _json_rows(["user_id", "item_id", "rating", "timestamp", "user_attr"]).map(
                lambda b: {"m.json": b}
            ),
        ),
        Reader(
            "modcloth-csv",
            lambda: {"m.csv": MODCLOTH_CSV},
            lambda root: _check_tables(ModCloth(str(root), file="m.csv")),
        ),
        Reader(
            "generic-csv",
            lambda: {"i.csv": GENERIC_CSV, "u.csv": GENERIC_USERS_CSV},
            lambda root: _check_tables(GenericTable(str(root / "i.csv"), str(root / "u.csv"))),
        ),
        Reader(
            "generic-tsv-gz",
            lambda: {
                "i.tsv.gz": gzip.compress(GENERIC_CSV.replace(b",", b"\t")),
                "u.tsv": GENERIC_USERS_CSV.replace(b",", b"\t"),
            },
            lambda root: _check_tables(GenericTable(str(root / "i.tsv.gz"), str(root / "u.tsv"))),
        ),
        Reader(
            "generic-dat",
            lambda: {"r.dat": GENERIC_DAT},
            lambda root: _check_tables(
                GenericTable(
                    str(root / "r.dat"),
                    sep="::",
                    header=False,
                    columns=["user", "item", "rating", "timestamp"],
                ),
                users_needed=False,
            ),
        ),
        Reader(
            "generic-jsonl",
            lambda: {"i.jsonl": GENERIC_JSONL},
            lambda root: _check_tables(GenericTable(str(root / "i.jsonl")), users_needed=False),
            lambda: _json_rows(["user", "item", "rating", "timestamp"]).map(
                lambda b: {"i.jsonl": b}
            ),
        ),
        Reader(
            "generic-parquet",
            _parquet_sample,
            lambda root: _check_tables(
                GenericTable(str(root / "i.parquet"), str(root / "u.parquet"))
            ),
            _parquet_documents,
        ),
        Reader(
            "user-index-json",
            lambda: {"index.json": INDEX_JSON},
            _index_run("index.json"),
            lambda: st.dictionaries(
                st.sampled_from(["user_ids", "item_ids", "x"]), JSON_VALUES, max_size=3
            ).map(lambda d: {"index.json": json.dumps(d).encode()}),
        ),
        Reader("user-index-ckpt", lambda: {"m.ckpt": _checkpoint_bytes()}, _index_run("m.ckpt")),
        Reader(
            "image-folder",
            lambda: {
                "img/a/0.png": _png_bytes(0),
                "img/a/1.png": _png_bytes(1),
                "img/b/0.jpg": _png_bytes(2, "JPEG"),
                "img/b/1.png": _png_bytes(3),
            },
            _images_run,
        ),
    )
}


def fuzz_inputs(name: str) -> st.SearchStrategy[FuzzInput]:
    """Mutated samples of reader ``name`` (and whole documents where it has them)."""
    reader = READERS[name]
    base = reader.sample()
    keys = sorted(base)

    def mutate(muts: list[Mutation]) -> FuzzInput:
        files = dict(base)
        for m in muts:
            key = keys[m.file % len(keys)]
            files[key] = _apply(files[key], m)
        return FuzzInput(files, note=repr(muts))

    mutated = mutations(len(keys)).map(mutate)
    if reader.documents is None:
        return mutated
    documents = reader.documents().map(lambda files: FuzzInput(files, note="document"))
    return st.one_of(mutated, documents)


def is_clear(err: BaseException) -> bool:
    """Whether ``err`` is one of the package's own clear errors."""
    if isinstance(err, DataFormatError):
        return "/" in str(err) or str(err).startswith("preprocess:")
    stages = ("preprocess:", "k_core:", "reindex:", "to_implicit:", "deduplicate:")
    return type(err) is ValueError and str(err).startswith(stages)


def run_reader(name: str, inp: FuzzInput) -> str:
    """Write ``inp`` to a fresh folder and run reader ``name`` on it.

    Returns:
        ``"loaded"`` or ``"clear error"``.

    Raises:
        Exception: Anything that is not a clear error (a bug).
    """
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        _write(root, inp.files)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return READERS[name].run(root)
            except (DataFormatError, ValueError) as err:
                if is_clear(err):
                    return "clear error"
                raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
