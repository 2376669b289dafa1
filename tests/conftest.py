"""Shared fixtures: small files in each official dataset layout, made from the synthetic source."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_unlearn.datamodules import Synthetic

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
ML100K = SHARED_DATASETS / "ml-100k"

# Two cores: intra-op threads fight with the other test process for nothing on tiny tensors.
torch.set_num_threads(1)

_COUNTRIES = ["United States", "Germany", "Japan", "Brazil", "United Kingdom", "Australia"]
_ML1M_OCCUPATIONS = {"artist": 2, "engineer": 17, "student": 4, "educator": 1, "healthcare": 6}


@pytest.fixture(scope="session")
def official_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding tiny ml-1m, Last.FM-1K, Last.FM-360K and ModCloth files."""
    root = tmp_path_factory.mktemp("official")
    src = Synthetic(num_users=60, num_items=50, interactions_per_user=10, seed=1)
    inter: Any = src.load_interactions()
    users: Any = src.load_users()

    ml1m = root / "ml-1m"
    ml1m.mkdir()
    with open(ml1m / "ratings.dat", "w", encoding="latin-1") as f:
        for r in inter.itertuples():
            f.write(f"{r.user}::{r.item}::{int(r.rating)}::{r.timestamp}\n")
    with open(ml1m / "users.dat", "w", encoding="latin-1") as f:
        for uid, u in users.iterrows():
            group = max(g for g in (1, 18, 25, 35, 45, 50, 56) if g <= max(int(u["age"]), 1))
            f.write(f"{uid}::{u['gender']}::{group}::{_ML1M_OCCUPATIONS[u['occupation']]}::12345\n")

    lfm1k = root / "lastfm-dataset-1K"
    lfm1k.mkdir()
    with open(lfm1k / "userid-timestamp-artid-artname-traid-traname.tsv", "w") as f:
        for r in inter.itertuples():
            ts = datetime.fromtimestamp(int(r.timestamp), tz=timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            f.write(f"user_{r.user}\t{ts}\tmbid-{r.item}\tArtist {r.item}\t\tTrack\n")
    with open(lfm1k / "userid-profile.tsv", "w") as f:
        f.write("#id\tgender\tage\tcountry\tregistered\n")
        for k, (uid, u) in enumerate(users.iterrows()):
            f.write(
                f"user_{uid}\t{u['gender'].lower()}\t{u['age']}\t{_COUNTRIES[k % 6]}"
                "\tAug 13, 2006\n"
            )

    lfm360 = root / "lastfm-dataset-360K"
    lfm360.mkdir()
    with open(lfm360 / "usersha1-artmbid-artname-plays.tsv", "w") as f:
        for r in inter.itertuples():
            f.write(f"sha{r.user}\tmbid-{r.item}\tArtist {r.item}\t{int(r.rating) * 10}\n")
    with open(lfm360 / "usersha1-profile.tsv", "w") as f:
        for k, (uid, u) in enumerate(users.iterrows()):
            f.write(
                f"sha{uid}\t{u['gender'].lower()}\t{u['age']}\t{_COUNTRIES[k % 6]}\tFeb 1, 2009\n"
            )

    modcloth = root / "modcloth"
    modcloth.mkdir()
    with open(modcloth / "modcloth_final_data.json", "w") as f:
        for r in inter.itertuples():
            shape = "Small" if users.loc[r.user, "gender"] == "F" else "Large"
            record = {
                "user_id": r.user,
                "item_id": r.item,
                "rating": r.rating,
                "timestamp": int(r.timestamp),
                "user_attr": shape,
            }
            f.write(json.dumps(record) + "\n")
    return root
