"""The centralised-ceiling benchmark runs end to end on ML-100K and writes what docs quote."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.federated_ceiling import main
from tests.conftest import ML100K, SHARED_DATASETS


@pytest.mark.skipif(not ML100K.exists(), reason="needs ../shared/datasets/ml-100k")
def test_ceiling_benchmark_writes_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ceiling"
    argv = ["federated_ceiling.py", "--root", str(SHARED_DATASETS), "--seeds", "0"]
    argv += ["--epochs", "2", "--vae-epochs", "3", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["backbone"], r["epochs"]) for r in rows] == [("ncf", 2), ("multvae", 3)]
    ncf = rows[0]
    assert len(ncf["curve"]) == 2
    # Two epochs of NeuMF already rank the held-out item far above a random ranker (0.10).
    assert ncf["test_last"]["hr@10"] > 0.3
    assert ncf["test_at_best_val"] == ncf["curve"][ncf["best_epoch"] - 1]["test"]
    table = out.with_suffix(".md").read_text()
    assert "| ncf | 1 | 2 |" in table and "| multvae | 1 | 3 |" in table
