"""The DLG speed benchmark runs end to end and both paths recover the same labels."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.dlg_speed import main


def test_dlg_speed_quick_run_writes_both_files(tmp_path: Path) -> None:
    result = main(["--quick", "--out", str(tmp_path / "dlg")])
    assert {(r["head"], r["width"]) for r in result["rows"]} == {("mlp", 16), ("dsvae", 16)}
    for row in result["rows"]:
        assert row["same_labels"]
        assert row["generic_s"] > 0 and row["structured_s"] > 0
    assert json.loads((tmp_path / "dlg.json").read_text())["benchmark"] == "dlg_speed"
    assert "structured" in (tmp_path / "dlg.md").read_text()
