"""FedAU2's tables: the config contract, a tiny table end to end (run, record, resume,
render, export), and every shipped table's cells parse as ``lit-unlearn fit`` configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from lit_unlearn.cli import build_cli
from lit_unlearn.methods.federated.experiment import FederatedTableError, TableSpec, load_table
from lit_unlearn.methods.federated.experiment.__main__ import main
from lit_unlearn.reporting.jsonl import JsonlStore

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "experiment" / "federated"
TABLES = sorted(p.name for p in CONFIGS.glob("fedau2_*.yaml"))


def _table(tmp_path: Path, **changes: object) -> Path:
    raw: dict[str, object] = {
        "kind": "table1",
        "out": str(tmp_path / "out"),
        "backbones": {"FedNCF": str(CONFIGS / "synthetic_fedncf.yaml")},
        "attributes": {"gender": 2},
        "seeds": [0],
        "embedding_every": 4,
        "gradient_at_round": 4,
        "cli_args": {
            "FedNCF": [
                "--trainer.max_epochs=1",
                "--data.init_args.rounds_per_epoch=8",
                "--data.init_args.source.init_args.num_users=120",
            ]
        },
        "methods": [
            {"name": "Original", "targets": ["gender"]},
            {
                "name": "FedAU2",
                "term": {"grl_scale": 400.0, "trigger": "correct", "head_kind": "dsvae"},
            },
            {
                "name": "FedAU2+Erasure",
                "term": {"grl_scale": 400.0, "trigger": "correct", "head_kind": "dsvae"},
                "erasure": {"replicates": 5},
                "backbones": ["FedNCF"],
            },
        ],
    }
    raw.update(changes)
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_tiny_table_runs_records_resumes_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _table(tmp_path, wandb_project="lit-unlearn-test")
    files = main(["--config", str(config)])
    out = tmp_path / "out"
    records = JsonlStore(out).records()
    assert [(r["method"], r["attribute"]) for r in records] == [
        ("Original", "gender"),
        ("FedAU2", "gender"),
        ("FedAU2+Erasure", "gender"),
    ]
    for r in records:
        assert r["rounds"] == 8
        assert 0 <= r["test"]["test/sampled/hr@10"] <= 1
        assert {a["attacker"] for a in r["audit"]} == {"mlp", "xgboost"}
        assert {g["attack"] for g in r["gradient"]} == {"dlg", "idlg"}
        assert set(r["attacks"]) == {"4", "8"}  # every 4 rounds; JSON keys
        assert (r["erasure"] is None) == (r["method"] != "FedAU2+Erasure")
        export = np.load(r["export"])
        assert export["representation"].shape[0] == export["user_id"].shape[0] == 120
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["Original", "FedAU2", "FedAU2+Erasure"]
    assert {"table.md", "summary.csv", "runs.csv", "table1.png"} <= {p.name for p in files}
    assert "FedAU2" in (out / "table.md").read_text()
    assert list((out / "wandb").glob("offline-run-*"))  # the tables went to W&B (offline)
    # Resume: nothing reruns (the records' fingerprints match), the table renders the same.
    mtime = (out / "rows.jsonl").stat().st_mtime_ns
    main(["--config", str(config)])
    assert (out / "rows.jsonl").stat().st_mtime_ns == mtime
    assert len(JsonlStore(out).records()) == 3
    _check_reaudit(config, records)


def _check_reaudit(config: Path, records: list[dict[str, Any]]) -> None:
    """``--reaudit`` re-runs the outside attacker on the exports: its draw 0 is the table's
    own attacker (the same number), other draws differ; an export written without the shadow
    split gets it from the cell's data config, with the same result."""
    out = config.parent / "out"
    files = main(["--config", str(config), "--reaudit", "2"])
    assert {p.name for p in files} == {"reaudit.csv", "reaudit.md"}
    frame = pd.read_csv(out / "reaudit.csv")
    assert len(frame) == 2 * len(records)  # one attribute, two draws per cell
    for r in records:
        final = r["attacks"][str(max(int(k) for k in r["attacks"]))]
        table = next(a for a in final if a["attacker"] == "mlp" and a["attribute"] == "gender")
        mine = frame[(frame["method"] == r["method"]) & (frame["draw"] == 0)]
        assert float(mine["balanced_accuracy"].iloc[0]) == pytest.approx(
            table["balanced_accuracy"], abs=1e-9
        )
    assert "BAcc mean over draws" in (out / "reaudit.md").read_text()
    export = Path(records[0]["export"])
    with np.load(export) as data:
        kept = {k: data[k] for k in data.files if k != "shadow"}
    np.savez(export, **kept)  # an export of before the `shadow` key
    main(["--config", str(config), "--reaudit", "2"])
    pd.testing.assert_frame_equal(pd.read_csv(out / "reaudit.csv"), frame)
    # The audit from both sides, narrowed to one method: 4 attackers x 2 protocols.
    main(["--config", str(config), "--leakage", "1", "--only", "FedAU2"])
    leak = pd.read_csv(out / "leakage.csv")
    assert set(leak["method"]) == {"FedAU2"} and len(leak) == 8
    assert set(leak["protocol"]) == {"shadow", "kfold"}
    assert ((leak["leakage"] >= 0) & (leak["leakage"] <= 1)).all()
    assert "lowest AUC" in (out / "leakage.md").read_text()
    # Narrowed again: the other cells' rows of the earlier file stay, its own are replaced.
    main(["--config", str(config), "--leakage", "1", "--only", "Original"])
    both = pd.read_csv(out / "leakage.csv")
    assert sorted(set(both["method"])) == ["FedAU2", "Original"] and len(both) == 16


def test_reaudit_refuses_what_it_cannot_audit(tmp_path: Path) -> None:
    from lit_unlearn.methods.federated.experiment.reaudit import reaudit, reaudit_export

    path = tmp_path / "x.npz"
    np.savez(path, representation=np.zeros((4, 2), np.float32), attr_gender=np.zeros(4))
    with pytest.raises(FederatedTableError, match="shadow"):
        reaudit_export(path, ["gender"])
    with pytest.raises(FederatedTableError, match="draws"):
        reaudit_export(path, ["gender"], draws=0)
    spec = load_table(_table(tmp_path))
    with pytest.raises(FederatedTableError, match="no recorded cell"):
        reaudit(spec, [{"export": str(tmp_path / "gone.npz")}])


@pytest.mark.parametrize("name", TABLES)
def test_every_cell_of_the_shipped_tables_is_a_valid_fit_config(name: str, tmp_path: Path) -> None:
    spec = load_table(CONFIGS / name)
    seen = set()
    for cell in spec.cells():
        if (cell.backbone, cell.method.name, cell.attribute) in seen:
            continue
        seen.add((cell.backbone, cell.method.name, cell.attribute))
        config = spec.cell_config(cell)
        path = tmp_path / f"{cell.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        source = spec.source_cell(cell)
        if source is not None:
            # Its checkpoint does not exist yet: parse the source's config instead.
            path.write_text(yaml.safe_dump(spec.cell_config(source)))
        cli = build_cli(["--config", str(path), *spec.cli_args.get(cell.backbone, ())], run=False)
        term = cli.model.terms[0]
        # A post-hoc cell's model is its source's (whose head may learn another attribute).
        trained = source if source is not None else cell
        assert term.head.num_classes == spec.attributes[trained.attribute]
        for key, value in {
            **cell.method.term,
            **cell.method.backbone_term.get(cell.backbone, {}),
        }.items():
            if hasattr(term, key):
                assert getattr(term, key) == value, (cell.name, key)
        assert len(cli.model.transforms) == len(cell.method.transforms)
        erasure = cli.model.final_erasure
        source = spec.source_cell(cell)
        if source is not None:
            # Post hoc: the source's training config, one step of FederatedErasureUnlearning on
            # its last checkpoint (which exists only once the source ran: checked as config).
            assert erasure is None
            assert config["trainer"]["limit_train_batches"] == 1
            (unlearn,) = [
                c
                for c in config["trainer"]["callbacks"]
                if "FederatedErasureUnlearning" in c["class_path"]
            ]
            assert unlearn["init_args"]["checkpoint"] == str(
                spec.run_dir(source) / "checkpoints" / "last.ckpt"
            )
            assert unlearn["init_args"]["erasure"]["init_args"]["seed"] == cell.seed
            assert unlearn["init_args"].get("attribute", source.attribute) == cell.attribute
            continue
        assert (erasure is None) == (cell.method.erasure is None)
        if erasure is not None:
            assert erasure.seed == cell.seed
            assert cell.backbone != "FedRAP"  # its residual tables do not move: refused


def test_bad_table_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FederatedTableError, match="does not exist"):
        load_table(tmp_path / "missing.yaml")
    for changes, match in (
        ({"kind": "poster"}, "kind"),
        ({"backbones": {"FedNCF": str(tmp_path / "nope.yaml")}}, "does not exist"),
        ({"attributes": {"gender": 1}}, "attributes.gender"),
        ({"methods": []}, "no methods"),
        ({"methods": [{"name": "A"}, {"name": "A"}]}, "repeat"),
        ({"methods": [{"name": "A", "targets": ["race"]}]}, "not table attributes"),
        ({"methods": [{"name": "A", "backbone_term": {"FedX": {}}}]}, "names no backbone"),
        ({"methods": [{"name": "A", "transforms": [{"init_args": {}}]}]}, "class_path"),
        ({"methods": [{"name": "A", "lr": 1}]}, "unknown keys"),
        ({"methods": [{"name": "A", "backbones": ["FedX"]}]}, "backbones must be"),
        ({"methods": [{"name": "A", "erasure": [1]}]}, "erasure"),
        ({"cli_args": {"FedX": []}}, "names no backbone"),
        ({"seeds": []}, "seeds"),
        ({"colour": "red"}, "unknown keys"),
        ({"methods": [{"name": "A", "erase_from": "B", "erasure": {}}]}, "no earlier"),
        ({"methods": [{"name": "B"}, {"name": "A", "erase_from": "B"}]}, "needs `erasure`"),
        (
            {
                "methods": [
                    {"name": "B"},
                    {"name": "A", "erase_from": "B", "erasure": {}, "term": {"grl_scale": 1.0}},
                ]
            },
            "as it is",
        ),
        (
            {
                "methods": [
                    {"name": "B", "erasure": {}},
                    {"name": "A", "erase_from": "B", "erasure": {}},
                ]
            },
            "erases already",
        ),
    ):
        with pytest.raises(FederatedTableError, match=match):
            load_table(_table(tmp_path, **changes))


def _erasing_the_original_for_both_attributes(tmp_path: Path) -> TableSpec:
    return load_table(
        _table(
            tmp_path,
            attributes={"gender": 2, "age": 3},
            methods=[
                {"name": "Original", "targets": ["gender"]},
                {"name": "Erased", "erasure": {}, "erase_from": "Original"},
            ],
        )
    )


def test_a_post_hoc_cell_of_another_attribute_erases_the_one_model_for_it(
    tmp_path: Path,
) -> None:
    """A source run for some attributes only (its head only observes: one model for all) is
    erased for every attribute of the erasing method, from its first target's checkpoint; the
    erasure names the attribute only where it differs from the source's (the gender cells'
    configs, hence their recorded fingerprints, stay as they were)."""
    spec = _erasing_the_original_for_both_attributes(tmp_path)
    erasing = [c for c in spec.cells() if c.method.name == "Erased"]
    assert [c.attribute for c in erasing] == ["gender", "age"]
    for cell in erasing:
        source = spec.source_cell(cell)
        assert source is not None and source.name == "FedNCF-Original-gender-seed0"
        config = spec.cell_config(cell)
        assert config["model"]["init_args"]["attribute"] == "gender"  # the source's model
        erase = config["trainer"]["callbacks"][-1]
        assert erase["class_path"].endswith("FederatedErasureUnlearning")
        assert erase["init_args"].get("attribute") == (
            None if cell.attribute == "gender" else "age"
        )


def test_a_cell_erasing_another_attribute_reports_no_gradient_attack_of_its_own(
    tmp_path: Path,
) -> None:
    """The source's uploads come from a head of the source's attribute: their DLG / iDLG are
    carried to a post-hoc cell of the same attribute only."""
    from lit_unlearn.methods.federated.experiment.runner import carried_gradient

    spec = _erasing_the_original_for_both_attributes(tmp_path)
    source_record = {"gradient": [{"attack": "dlg", "accuracy": 0.9}]}
    for cell in (c for c in spec.cells() if c.method.name == "Erased"):
        source = spec.source_cell(cell)
        assert source is not None
        carried = carried_gradient(source, cell, source_record)
        assert carried == ([] if cell.attribute == "age" else source_record["gradient"])


def test_only_narrows_each_axis_it_names(tmp_path: Path) -> None:
    from lit_unlearn.methods.federated.experiment.runner import _selected

    spec = load_table(_table(tmp_path, attributes={"gender": 2, "age": 3}, seeds=[0, 1]))
    cells = spec.cells()
    assert [c.name for c in cells][:3] == [
        "FedNCF-Original-gender-seed0",
        "FedNCF-FedAU2-gender-seed0",
        "FedNCF-FedAU2-age-seed0",
    ]  # seed by seed; Original runs for its one target
    pick = [c.name for c in cells if _selected(spec, c, {"FedAU2", "age"})]
    assert pick == ["FedNCF-FedAU2-age-seed0", "FedNCF-FedAU2-age-seed1"]
    assert len([c for c in cells if _selected(spec, c, {"FedNCF"})]) == len(cells)
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "table.yaml"), "--only", "FedXYZ"])


@pytest.mark.slow
def test_a_post_hoc_erasure_cell_equals_the_in_fit_erasure_of_the_same_training(
    tmp_path: Path,
) -> None:
    """``erase_from`` erases the source cell's checkpoint in one step: the same model, test
    ranking and attacks as training with the erasure in the fit; DLG / iDLG are the source's."""
    erasure = {"replicates": 5, "quantile": 0.01, "calibrate": False}
    config = _table(
        tmp_path,
        methods=[
            {"name": "Original", "targets": ["gender"]},
            {"name": "Original+Erasure", "targets": ["gender"], "erasure": erasure},
            {
                "name": "post hoc",
                "targets": ["gender"],
                "erasure": erasure,
                "erase_from": "Original",
            },
        ],
    )
    # Asking for the post-hoc cell alone runs its source first.
    main(["--config", str(config), "--only", "post hoc"])
    out = tmp_path / "out"
    records = {r["method"]: r for r in JsonlStore(out).records()}
    assert list(records) == ["Original", "post hoc"]
    main(["--config", str(config)])
    records = {r["method"]: r for r in JsonlStore(out).records()}
    original, in_fit, post = records["Original"], records["Original+Erasure"], records["post hoc"]
    assert post["derived_from"] == "FedNCF-Original-gender-seed0"
    assert post["rounds"] == in_fit["rounds"] == 8
    assert post["gradient"] == original["gradient"]
    assert post["erasure"]["shrink"] == pytest.approx(in_fit["erasure"]["shrink"])
    np.testing.assert_allclose(
        np.load(post["export"])["representation"],
        np.load(in_fit["export"])["representation"],
        atol=1e-6,
    )
    assert not np.allclose(
        np.load(post["export"])["representation"],
        np.load(original["export"])["representation"],
    )
    for name, value in in_fit["test"].items():
        assert post["test"][name] == pytest.approx(value, abs=1e-6), name
    assert set(post["attacks"]) == {"4", "8"}
    assert post["attacks"]["4"] == original["attacks"]["4"]  # before the erasure: the source's
    assert post["attacks"]["8"] == in_fit["attacks"]["8"]
    assert post["fit_seconds"] > original["fit_seconds"]


def test_render_only_draws_the_current_cells_records_once(tmp_path: Path) -> None:
    """A cell re-run under a new config leaves its old record in rows.jsonl; ``--render-only``
    draws only the records whose fingerprint matches the current cells (the last of each)."""
    from lit_unlearn.methods.federated.experiment.runner import config_fingerprint, recorded

    spec = load_table(_table(tmp_path))
    store = JsonlStore(spec.out)
    cells = spec.cells()
    for i, cell in enumerate(cells[:2]):
        fp = config_fingerprint(spec.cell_config(cell), spec.cli_args.get(cell.backbone, ()))
        base = {"backbone": cell.backbone, "method": cell.method.name,
                "attribute": cell.attribute, "seed": cell.seed}  # fmt: skip
        store.append({**base, "fingerprint": "stale", "n": -1})
        store.append({**base, "fingerprint": fp, "n": i})
        store.append({**base, "fingerprint": fp, "n": 10 + i})  # a re-run: the last wins
    assert [r["n"] for r in recorded(spec)] == [10, 11]
