"""Every YAML config runs: a fast_dev_run fit through the CLI for each one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_unlearn.cli import build_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAINER_CPU = str(CONFIGS / "trainer" / "cpu.yaml")
DATA_SYNTH = str(CONFIGS / "data" / "synthetic.yaml")
MODEL_MF = str(CONFIGS / "model" / "mf.yaml")
DATA_FORGET = str(CONFIGS / "data" / "synthetic_forgetting.yaml")
MODEL_ENMF = str(CONFIGS / "model" / "enmf.yaml")
# Interaction-unlearning methods need forgetting requests and (AltEraser) the ENMF backbone.
INTERACTION_METHODS = {
    p.relative_to(CONFIGS / "method").as_posix()
    for p in (CONFIGS / "method" / "interaction").glob("*.yaml")
}


def config_names(kind: str) -> list[str]:
    """Every YAML under ``configs/<kind>/``, family folders included, as relative paths."""
    return sorted(
        p.relative_to(CONFIGS / kind).as_posix() for p in (CONFIGS / kind).rglob("*.yaml")
    )


def is_table(path: Path) -> bool:
    """An experiment-table YAML (it names fit configs in ``rows``), not a fit config."""
    return "rows" in (yaml.safe_load(path.read_text()) or {})


# The attribute experiment configs that `lit-unlearn fit` runs; *_table.yaml are comparison
# tables of `python -m lit_unlearn.methods.attribute.experiment` (tests/methods/attribute).
ATTRIBUTE_EXPERIMENTS = sorted(
    p.name
    for p in (CONFIGS / "experiment" / "attribute").glob("*.yaml")
    if not p.name.endswith("_table.yaml")
)
# Files tests can point at: the shared ML-100K, or the tiny official-layout files of conftest.
SHARED_DATA = {"ml100k.yaml", "ml100k_fedau2.yaml", "ml100k_forgetting.yaml"}
# GenericTable configs naming a shared file by its path (no root to point elsewhere).
SHARED_FILES = {"ml100k_generic_forgetting.yaml"}


def fit(args: list[str], tmp_path: Path) -> None:
    build_cli(
        ["fit", *args, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"]
        + [f"--trainer.logger.init_args.save_dir={tmp_path}"]
        * ("--trainer.logger=false" not in args)
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "data").glob("*.yaml")))
def test_data_config(name: str, tmp_path: Path, official_root: Path) -> None:
    from tests.conftest import SHARED_DATASETS

    root = SHARED_DATASETS if name in SHARED_DATA else official_root
    if name in SHARED_DATA and not (root / "ml-100k").exists():
        pytest.skip("ML-100K not found beside the repository")
    if name in SHARED_FILES and not (SHARED_DATASETS / "ml-100k").exists():
        pytest.skip("ML-100K not found beside the repository")
    extra = ["--data.init_args.num_eval_negatives=20"] if name not in SHARED_DATA else []
    if name == "lastfm360k.yaml":  # the paper's 23/51-core would empty the tiny file
        extra += ["--data.init_args.user_k=2", "--data.init_args.item_k=2"]
    if name.startswith("synthetic") or name in SHARED_FILES:
        # No root to point elsewhere (generated, or a shared file named by its path). The
        # ML-1M-size set is shrunk here: its shape is what matters, not its 1M rows.
        small = [
            "--data.init_args.source.init_args.num_users=600",
            "--data.init_args.source.init_args.num_items=400",
            "--data.init_args.source.init_args.interactions_per_user=40",
        ]
        fit(
            [
                "--config",
                TRAINER_CPU,
                "--config",
                str(CONFIGS / "data" / name),
                "--config",
                MODEL_MF,
                *(small if "ml1m" in name else []),
            ],
            tmp_path,
        )
        return
    fit(
        [
            "--config",
            TRAINER_CPU,
            "--config",
            str(CONFIGS / "data" / name),
            "--config",
            MODEL_MF,
            f"--data.init_args.source.init_args.root={root}",
            "--data.init_args.download=false",
            *extra,
        ],
        tmp_path,
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "model").glob("*.yaml")))
def test_model_config(name: str, tmp_path: Path) -> None:
    fit(
        [
            "--config",
            TRAINER_CPU,
            "--config",
            DATA_SYNTH,
            "--config",
            str(CONFIGS / "model" / name),
        ],
        tmp_path,
    )


@pytest.mark.parametrize("name", ["cpu.yaml", "wandb.yaml"])
def test_trainer_config(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the wandb config's logger list writes under ./runs
    monkeypatch.setenv("WANDB_MODE", "offline")
    configs = ["--config", TRAINER_CPU] if name != "cpu.yaml" else []
    args = [
        *configs,
        "--config",
        str(CONFIGS / "trainer" / name),
        "--config",
        DATA_SYNTH,
        "--config",
        MODEL_MF,
    ]
    if name == "wandb.yaml":
        build_cli(
            ["fit", *args, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"]
        )
        return
    fit(args, tmp_path)


@pytest.mark.ddp
def test_ddp_trainer_config(tmp_path: Path) -> None:
    # Not fast_dev_run: that drops Lightning's SaveConfigCallback, and ddp_spawn must pickle it
    # (it holds the parser, which once referred to an unpicklable function-local CLI class).
    build_cli(
        [
            "fit",
            "--config",
            str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
            "--config",
            DATA_SYNTH,
            "--config",
            MODEL_MF,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    # The config was saved beside the logs (by the callback that had to be pickled).
    assert list(tmp_path.rglob("config.yaml"))


@pytest.mark.parametrize(
    "name",
    # attrcloak_* / erasure_* unlearn a trained checkpoint: covered by the test that trains one
    # first.
    # class_unlearning/*: tests/methods/class_unlearning/test_configs.py (image data stacks).
    # federated/fedau2_*: FedAU2 tables, every cell checked in tests/methods/federated/.
    [
        name
        for name in config_names("experiment")
        if not Path(name).name.startswith(("attrcloak", "alteraser", "erasure", "fedau2_"))
        and not name.startswith("class_unlearning/")
    ],
)
def test_experiment_config(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import ML100K, SHARED_DATASETS

    monkeypatch.chdir(tmp_path)  # checkpoint dirs in the configs are relative

    extra = []
    if "ml100k" in name:
        if not ML100K.exists():
            pytest.skip("ML-100K not found beside the repository")
        extra = [
            f"--data.init_args.source.init_args.root={SHARED_DATASETS}",
            "--data.init_args.download=false",
        ]
    fit(["--config", str(CONFIGS / "experiment" / name), *extra], tmp_path)


def test_method_configs_are_all_found() -> None:
    # the families live in method/<family>/: a top-level glob would miss them
    assert {
        "attribute/attrcloak_dd.yaml",
        "attribute/u2u_r.yaml",
        "interaction/retrain.yaml",
    } <= set(config_names("method"))
    assert ATTRIBUTE_EXPERIMENTS == [
        "attrcloak_ml100k_dd.yaml",
        "attrcloak_ml100k_dd_robust.yaml",
        "attrcloak_ml100k_df.yaml",
        "attrcloak_ml100k_df_robust.yaml",
        "erasure_ml100k.yaml",
    ]


@pytest.mark.parametrize(
    "name", [n for n in config_names("method") if not n.startswith("class_unlearning/")]
)
def test_method_config(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unlearning method config plugs into a trainer/data/model stack (federated ones
    into the federated synthetic experiment)."""
    if name.startswith("federated/"):
        base = str(CONFIGS / "experiment" / "federated" / "synthetic_fedncf.yaml")
        monkeypatch.chdir(tmp_path)  # the experiment's checkpoint dir is relative
        fit(["--config", base, "--config", str(CONFIGS / "method" / name)], tmp_path)
        return
    data, model = (
        (DATA_FORGET, MODEL_ENMF) if name in INTERACTION_METHODS else (DATA_SYNTH, MODEL_MF)
    )
    fit(
        [
            "--config", TRAINER_CPU, "--config", data, "--config", model,
            "--config", str(CONFIGS / "method" / name),
        ],
        tmp_path,
    )  # fmt: skip


def ml100k_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Skip without ML-100K; run in ``tmp_path`` (the configs' checkpoint paths are relative).

    Returns:
        The CLI override that points the configs' data root at ``../shared/datasets``.
    """
    from tests.conftest import ML100K, SHARED_DATASETS

    if not ML100K.exists():
        pytest.skip("ML-100K not found beside the repository")
    monkeypatch.chdir(tmp_path)
    return f"--data.init_args.source.init_args.root={SHARED_DATASETS}"


def test_attrcloak_experiment_configs_unlearn_a_trained_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DD and DF experiment configs run on top of the checkpoint the NCF config writes."""
    root = ml100k_in(tmp_path, monkeypatch)
    cli = build_cli(
        [
            "--config", str(CONFIGS / "experiment" / "ml100k_ncf.yaml"), root,
            "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.callbacks=[]",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        ],
        run=False,
    )  # fmt: skip
    cli.trainer.fit(cli.model, cli.datamodule)
    ckpt = tmp_path / "runs" / "ml100k_ncf" / "checkpoints" / "last.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    for name in ATTRIBUTE_EXPERIMENTS:
        fit(["--config", str(CONFIGS / "experiment" / "attribute" / name), root], tmp_path)


def test_alteraser_experiment_configs_unlearn_a_trained_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AltEraser config runs on top of the checkpoint the original-model config writes."""
    root = ml100k_in(tmp_path, monkeypatch)
    original = CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_original.yaml"
    build_cli(
        [
            "fit", "--config", str(original), root,
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        ]
    )  # fmt: skip
    assert (tmp_path / "runs" / "alteraser_ml100k" / "checkpoints" / "original.ckpt").is_file()
    ah = CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_ah.yaml"
    fit(["--config", str(ah), root], tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in config_names("experiment")
        if n.startswith("interaction/") and is_table(CONFIGS / "experiment" / n)
    ],
)
def test_experiment_table_config(name: str) -> None:
    """Every interaction table YAML loads and every row's callbacks instantiate (the attribute
    tables: tests/methods/attribute/test_experiment.py)."""
    from lit_unlearn.methods.interaction.experiment import instantiate_callbacks, load_experiment

    config = load_experiment(CONFIGS / "experiment" / name)
    for row in config.rows:
        assert instantiate_callbacks(config.callback_specs(row, None)), row.name
    assert instantiate_callbacks([config.stop])
