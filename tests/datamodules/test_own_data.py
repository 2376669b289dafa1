"""Loading a new user's own implicit-feedback files (issue 24): interaction-only data with
``attributes: []``, files without a users table, ``.dat`` / header-less / JSON-lines tables, and
relative paths from another working directory."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from lit_unlearn.datamodules import ForgettingData, RecommendationData
from lit_unlearn.datamodules.paths import DATA_ENV, repository_root, resolve_path
from lit_unlearn.datamodules.preprocess import preprocess
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources import DataNotFoundError, GenericTable, MovieLens100K
from lit_unlearn.models import MF
from lit_unlearn.tasks import RecommenderTask
from tests.conftest import CONFIGS, ML100K, REPO


@pytest.fixture(autouse=True)
def _offline_and_no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(DATA_ENV, raising=False)


def interactions_csv(path: Path, users: int = 30, items: int = 40, per_user: int = 12) -> Path:
    """An interactions-only CSV (string ids, ratings, no timestamps, no users file)."""
    rng = np.random.default_rng(0)
    rows = [
        f"u{u},i{i},{rng.integers(1, 6)}"
        for u in range(users)
        for i in rng.choice(items, per_user, replace=False)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# 1. attributes: [] with data that has no users file
# ---------------------------------------------------------------------------------------------


def test_forgetting_data_without_attributes_or_users_file(tmp_path: Path) -> None:
    source = GenericTable(str(interactions_csv(tmp_path / "i.csv")))
    dm = ForgettingData(source, attributes=[], num_forget_users=4, eval_batch_size=8)
    dm.setup("fit")
    assert (dm.num_users, dm.num_items) == (30, 40)
    assert dm.user_attributes.names == [] and dm.user_attributes.num_users == 30
    assert len(dm.forget_users) == 4 and len(dm.forget_pairs) > 0
    pairs = torch.cat([torch.stack([b["user"], b["item"]], 1) for b in dm.train_dataloader()])
    assert len(pairs) == len(dm.split.train)
    (full,) = dm.test_dataloader()
    assert sum(len(b["user"]) for b in full) == 30
    # end to end: a model trains on it
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 4))
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(task, dm)
    assert trainer.current_epoch == 1


def test_recommendation_data_without_attributes_or_users_file(tmp_path: Path) -> None:
    source = GenericTable(str(interactions_csv(tmp_path / "i.csv")))
    dm = RecommendationData(source, attributes=[], num_eval_negatives=10, eval_batch_size=8)
    dm.setup("fit")
    assert dm.num_users == 30 and dm.user_attributes.codes == {}
    assert len(dm.split.test) == len(dm.split.val) == 30
    assert sum(len(b["user"]) for b in dm.train_dataloader()) == len(dm.split.train)
    full, sampled = dm.val_dataloader()
    assert sum(len(b["user"]) for b in full) == 30
    assert torch.cat([b["negatives"] for b in sampled]).shape == (30, 10)


def test_empty_attributes_still_drop_users_without_a_profile(tmp_path: Path) -> None:
    inter = interactions_csv(tmp_path / "i.csv", users=6, items=10, per_user=4)
    users = tmp_path / "u.csv"
    users.write_text("user,gender\n" + "".join(f"u{k},F\n" for k in range(4)))
    dm = RecommendationData(
        GenericTable(str(inter), str(users)), attributes=[], protocols=["full"], validation=False
    )
    assert dm.index.user_ids == ["u0", "u1", "u2", "u3"]


# ---------------------------------------------------------------------------------------------
# 2. no users file: clear errors instead of an IndexError in preprocessing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"attributes \['gender', 'age', 'occupation'\] need a users table"),
        ({"attributes": ["gender"], "balance": "gender"}, r"and balance='gender' need a users"),
        ({"attributes": [], "balance": "gender"}, r"^balance='gender' need a users table"),
        ({"attributes": ["gender"], "user_k": 5, "item_k": 5}, r"attributes \['gender'\] need"),
    ],
)
def test_no_users_file_says_what_is_missing(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    source = GenericTable(str(interactions_csv(tmp_path / "i.csv")))
    with pytest.raises(ValueError, match=match) as err:
        RecommendationData(source, protocols=["full"], **kwargs).setup("fit")  # type: ignore[arg-type]
    assert "no users file" in str(err.value) and "attributes: []" in str(err.value)
    with pytest.raises(ValueError, match=r"attributes \['gender'\] need a users table"):
        ForgettingData(source, num_forget_users=2).setup("fit")  # default attributes


def test_preprocess_with_an_empty_users_table_is_a_clear_error() -> None:
    frame = pd.DataFrame(
        {"user": ["a", "b"], "item": ["x", "y"], "rating": [1.0, 2.0], "timestamp": [0, 1]}
    )
    empty = pd.DataFrame(index=pd.Index([], dtype=object, name="user"))
    with pytest.raises(ValueError, match=r"users table is empty.*users=None"):
        preprocess(frame, empty, rating_threshold=None, user_k=1, item_k=1)


# ---------------------------------------------------------------------------------------------
# 3. .dat files, separate users_sep, header-less files
# ---------------------------------------------------------------------------------------------

RATINGS_DAT = "1::10::5::978300760\n1::11::3::978302109\n2::10::4::978301968\n"


def test_dat_needs_an_explicit_separator(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ratings\.dat: a \.dat file .* pass sep \(e\.g\."):
        GenericTable(str(tmp_path / "ratings.dat"))
    with pytest.raises(ValueError, match=r"users\.dat: a \.dat file .* pass users_sep"):
        GenericTable(str(tmp_path / "r.csv"), str(tmp_path / "users.dat"))


def test_headerless_dat_with_column_names_and_its_own_users_sep(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(RATINGS_DAT)
    (tmp_path / "users.dat").write_text("1|F|25\n2|M|35\n")
    src = GenericTable(
        str(tmp_path / "ratings.dat"),
        str(tmp_path / "users.dat"),
        sep="::",
        users_sep="|",
        header=False,
        columns=["user", "item", "rating", "timestamp"],
        users_columns=["user", "gender", "age"],
    )
    table = src.load_interactions()
    assert table["user"].tolist() == ["1", "1", "2"]
    assert table["rating"].tolist() == [5.0, 3.0, 4.0]
    assert table["timestamp"].tolist() == [978300760, 978302109, 978301968]
    users = src.load_users()
    assert users.index.tolist() == ["1", "2"] and users["gender"].tolist() == ["F", "M"]


def test_users_sep_defaults_to_sep_and_header_per_file(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(RATINGS_DAT)
    (tmp_path / "users.csv").write_text("user,gender\n1,F\n2,M\n")
    ratings, users = str(tmp_path / "ratings.dat"), str(tmp_path / "users.csv")
    names = ["user", "item", "rating", "timestamp"]
    src = GenericTable(
        ratings, users, sep="::", users_sep=",", header=False, users_header=True, columns=names
    )
    assert src.load_users()["gender"].to_dict() == {"1": "F", "2": "M"}
    same = GenericTable(ratings, users, sep="::", header=False, columns=names)
    assert same.users_sep == "::" and not same.users_header


def test_headerless_columns_by_position(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(RATINGS_DAT)
    src = GenericTable(
        str(tmp_path / "ratings.dat"),
        sep="::",
        header=False,
        user_col=0,
        item_col=1,
        rating_col=2,
        timestamp_col=3,
    )
    assert src.load_interactions()["item"].tolist() == ["10", "11", "10"]
    path = str(tmp_path / "ratings.dat")
    named = GenericTable(path, sep="::", header=False, user_col="0")  # a position as text
    with pytest.raises(DataFormatError, match=r"no column 'item'.*'3'\] \(the file has no head"):
        named.load_interactions()
    far = GenericTable(path, sep="::", header=False, user_col=0, item_col=1, rating_col=7)
    with pytest.raises(DataFormatError, match=r"no column at position 7 \(given as rating_col\)"):
        far.load_interactions()
    wrong = GenericTable(path, sep="::", header=False, columns=["u", "i"])
    with pytest.raises(DataFormatError, match=r"2 column names \['u', 'i'\] given, but line 1"):
        wrong.load_interactions()


def test_header_and_column_option_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set header to false"):
        GenericTable(str(tmp_path / "i.csv"), columns=["user", "item"])
    with pytest.raises(ValueError, match="names its own columns"):
        GenericTable(str(tmp_path / "i.jsonl"), header=False, columns=["user", "item"])
    with pytest.raises(ValueError, match="JSON-lines fields have no position"):
        GenericTable(str(tmp_path / "i.jsonl"), user_col=0)
    with pytest.raises(ValueError, match="user_col must be a column name or a position"):
        GenericTable(str(tmp_path / "i.csv"), user_col=-1)
    with pytest.raises(ValueError, match="users_sep must be a non-empty string"):
        GenericTable(str(tmp_path / "i.csv"), users_sep="")


# ---------------------------------------------------------------------------------------------
# 4. JSON lines
# ---------------------------------------------------------------------------------------------


def test_jsonl_interactions_and_ndjson_users(tmp_path: Path) -> None:
    (tmp_path / "clicks.jsonl").write_text(
        '{"uid": 7, "sku": "a", "when": "2009-05-04T23:08:57Z", "extra": [1]}\n'
        "\n"
        '{"uid": "8", "sku": "b", "when": "2009-05-04T23:10:00Z", "score": 4}\n'
    )
    (tmp_path / "people.ndjson").write_text('{"id": 7, "gender": "F", "age": 31}\n{"id": 8}\n')
    src = GenericTable(
        str(tmp_path / "clicks.jsonl"),
        str(tmp_path / "people.ndjson"),
        user_col="uid",
        item_col="sku",
        rating_col="score",
        timestamp_col="when",
        users_id_col="id",
        sep="::",  # separators concern text files only
    )
    table = src.load_interactions()
    assert table["user"].tolist() == ["7", "8"] and table["item"].tolist() == ["a", "b"]
    assert np.isnan(table["rating"].iloc[0]) and table["rating"].iloc[1] == 4.0
    assert table["timestamp"].tolist() == [1241478537, 1241478600]
    users = src.load_users()
    assert users.index.tolist() == ["7", "8"] and list(users.columns) == ["gender", "age"]
    assert users.loc["7", "age"] == 31 and bool(users["gender"].isna()["8"])
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write('{"user": 1, "item": 2}\n{"user": 1, "item": 3}\n')
    assert GenericTable(str(gz)).load_interactions()["item"].tolist() == ["2", "3"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"user": 1, "item": 2}\n\n{"user": 1, "item": 3\n', r"line 3: not valid JSON"),
        ('{"user": 1, "item": 2}\n[1, 2]\n', r"line 2: expected a JSON object, got list"),
        ('{"user": 1, "item": 2, "rating": 5}\n{"user": 2, "item": 3, "rating": "good"}\n',
         r"line 2: 'rating' must be a number, got 'good'"),
        ('{"user": 1, "item": 2}\n{"item": 3}\n', r"line 2: empty user_col 'user'"),
        ('{"uid": 1, "item": 2}\n', r"no column 'user' \(given as user_col\).*\['uid', 'item'\]"),
        ('{"user": 1, "item": 2, "timestamp": "soon"}\n', r"line 1: 'timestamp' must be epoch"),
        ("\n\n", "file is empty; expected one JSON object per line"),
        (b'{"user": 1, "item": "\xff"}\n', r"line 1: not valid UTF-8"),
    ],
)  # fmt: skip
def test_jsonl_errors_name_the_file_and_line(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: .*" + match):
        GenericTable(str(path)).load_interactions()


# ---------------------------------------------------------------------------------------------
# 5. relative paths from another working directory
# ---------------------------------------------------------------------------------------------


def test_repository_root_is_the_checkout() -> None:
    assert repository_root() == REPO
    assert repository_root(CONFIGS / "experiment" / "interaction") == REPO


@pytest.mark.skipif(not ML100K.is_dir(), reason="real MovieLens-100K not present")
def test_config_root_works_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = MovieLens100K(root="../shared/datasets")  # as configs/data/ml100k_forgetting.yaml
    assert src.root == REPO / ".." / "shared" / "datasets"
    src.prepare(download=False)
    assert len(src.load_users()) == 943


def test_data_env_names_the_datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = tmp_path / "datasets"
    interactions_csv(datasets / "mine" / "i.csv", users=5, items=6, per_user=3)
    monkeypatch.chdir(tmp_path / "datasets" / "mine")  # "mine/i.csv" is not under the cwd
    monkeypatch.setenv(DATA_ENV, str(datasets))
    src = GenericTable("mine/i.csv")
    assert src.interactions_path == datasets / "mine" / "i.csv"
    assert len(src.load_interactions()) == 15
    assert MovieLens100K(root="nowhere").root == datasets  # a source root *is* the datasets root
    (tmp_path / "datasets" / "mine" / "nowhere").mkdir()
    assert MovieLens100K(root="nowhere").root == Path("nowhere")  # the cwd comes first


def test_missing_data_names_every_location_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        GenericTable("nope/i.csv").prepare()
    msg = str(err.value)
    assert str(tmp_path / "nope" / "i.csv") + " (working directory)" in msg
    assert str(REPO / "nope" / "i.csv") + f" (repository root {REPO})" in msg
    assert f"${DATA_ENV} (not set)" in msg
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "d"))
    with pytest.raises(DataNotFoundError) as err:
        MovieLens100K(root="nope").prepare(download=False)
    msg = str(err.value)
    assert f"{tmp_path / 'nope'} (working directory)" in msg
    assert f"{tmp_path / 'd'} (${DATA_ENV})" in msg
    assert f"{REPO / 'nope'} (repository root" in msg


def test_experiment_config_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_unlearn.methods.interaction.experiment import load_experiment

    monkeypatch.chdir(tmp_path)
    config = load_experiment("configs/experiment/interaction/alteraser_ml100k_table.yaml")
    assert config.path == CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_table.yaml"
    assert config.data == str(CONFIGS / "data" / "ml100k_forgetting.yaml")
    assert config.model == str(CONFIGS / "model" / "enmf.yaml")
    assert all(r.method.is_file() and r.method.is_absolute() for r in config.rows)
    with pytest.raises(FileNotFoundError, match=r"no file at configs/none\.yaml .*working direc"):
        load_experiment("configs/none.yaml")


def test_config_paths_resolve_against_the_naming_files_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    (project / "configs" / "data").mkdir(parents=True)
    (project / "configs" / "data" / "d.yaml").write_text("data: {}\n")
    anchor = project / "configs" / "experiment" / "e.yaml"
    found = resolve_path("configs/data/d.yaml", "config", anchor=anchor)
    assert found.found and found.path == project / "configs" / "data" / "d.yaml"
    assert resolve_path("configs/data/ml100k.yaml", "config", anchor=anchor).path == (
        CONFIGS / "data" / "ml100k.yaml"
    )  # then the package's checkout
