"""Re-auditing a table's exports with another attacker (outside audits, issue 23)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.methods.attribute.experiment.reaudit import exports, main, reaudit, summarise


def fake_table(
    root: Path, rows: tuple[str, ...] = ("A", "B"), seeds: tuple[int, ...] = (0, 1)
) -> Path:
    """Exports as a table run leaves them: 80 users, gender (2) and age (3), 20% shadow; row A
    plants gender in the first coordinate, B holds nothing."""
    rng = np.random.default_rng(0)
    n = 80
    ids = [str(u + 1) for u in range(n)]
    gender = np.array(["F", "M"])[np.arange(n) % 2]
    age = np.array(["18-24", "25-34", "35-44"])[np.arange(n) % 3]
    folder = root / "exports"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "user_id": ids,
            "gender": gender,
            "age": age,
            "shadow": (np.arange(n) % 5 == 0).astype(int),
        }
    ).to_csv(folder / "attributes.csv", index=False)
    for seed in seeds:
        (folder / f"seed{seed}").mkdir()
        for row in rows:
            rep = rng.standard_normal((n, 4))
            if row == "A":
                rep[:, 0] += 3.0 * (gender == "M")
            np.savez(
                folder / f"seed{seed}" / f"{row}.npz", user_ids=np.array(ids), representations=rep
            )
    return root


def test_reaudit_every_export_and_summarise(tmp_path: Path) -> None:
    table = fake_table(tmp_path)
    assert [(s, seed) for s, seed, _ in exports(table)] == [("A", 0), ("B", 0), ("A", 1), ("B", 1)]
    cells = reaudit(table, ["logreg"], protocols=["kfold"], permutations=1)
    assert len(cells) == 4 * 2  # exports x attributes
    assert set(cells.columns) >= {"row", "seed", "attribute", "leakage", "null_leakage_p95"}
    summary = {r["row"]: r for r in summarise(cells).to_dict("records")}
    a, b = summary["A"], summary["B"]
    assert a["seeds"] == 2 and a["leakage at"] == "gender/logreg/kfold"
    assert float(a["worst leakage - null p95"]) > 0.5
    assert float(b["worst leakage - null p95"]) < float(a["worst leakage - null p95"])
    only = reaudit(table, ["logreg"], protocols=["shadow"], permutations=0, rows=["B"])
    assert set(only["row"]) == {"B"} and set(only["protocol"]) == {"shadow"}


def test_command_writes_the_report_and_refuses_bad_input(tmp_path: Path) -> None:
    table = fake_table(tmp_path / "t", rows=("A",), seeds=(0,))
    main(
        [
            "--table",
            str(table),
            "--attackers",
            "quadratic",
            "--protocols",
            "kfold",
            "--permutations",
            "1",
            "--repeats",
            "2",
            "--stem",
            "quad",
        ]
    )
    report = (table / "quad.md").read_text()
    assert report.count("| A |") == 1 and "- torch: " in report and "2 fold draw(s)" in report
    cells = pd.read_csv(table / "quad_cells.csv")
    assert len(cells) == 2 and set(cells["kfold_repeats"]) == {2} and set(cells["n_users"]) == {80}
    with pytest.raises(ValueError, match="no export for rows"):
        exports(table, ["C"])
    with pytest.raises(FileNotFoundError, match=r"attributes\.csv"):
        exports(tmp_path / "empty")
    with pytest.raises(SystemExit):
        main(["--table", str(table), "--attackers", "svm"])
