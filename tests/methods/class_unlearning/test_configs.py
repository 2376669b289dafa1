"""Every class-unlearning config runs: a fast_dev_run fit through the CLI for each one.

CIFAR configs read tiny files in the official pickle format, the image-folder config a few PNGs;
the bundled sets (digits, MNIST-5k) are real. The Fine-tune configs unlearn a checkpoint the
digits config writes first; table configs are checked by the experiment tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lit_unlearn.cli import build_cli
from tests.conftest import REPO
from tests.datamodules.cifar_files import (
    CIFAR10_ALL_NAMES,
    COARSE_NAMES,
    FINE_NAMES,
    cifar100_batch,
    dump,
    noisy_rows,
    write_cifar10,
)

CONFIGS = REPO / "configs"
FAMILY = "class_unlearning"


def _names(kind: str) -> list[str]:
    return sorted(p.name for p in (CONFIGS / kind / FAMILY).glob("*.yaml"))


def _is_table(name: str) -> bool:
    return "rows" in (yaml.safe_load((CONFIGS / "experiment" / FAMILY / name).read_text()) or {})


EXPERIMENTS = [n for n in _names("experiment") if not _is_table(n)]
TABLES = [n for n in _names("experiment") if _is_table(n)]
# A data fragment and the model fragment it pairs with.
PAIRS = {
    "digits.yaml": "small_cnn_digits.yaml",
    "mnist5k.yaml": "small_cnn_mnist.yaml",
    "cifar10.yaml": "resnet18_cifar10.yaml",
    "cifar100.yaml": "resnet18_cifar100.yaml",
    "image_folder.yaml": "vit_pins.yaml",
}


def _write_pins(root: Path, classes: int = 3, per_class: int = 5) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"pins_person {c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _write_cifar100(root: Path, n: int = 8) -> Path:
    """Like cifar_files.write_cifar100 (4 fine classes) with noisy pixels: normalisable."""
    folder = root / "cifar-100-python"
    k = len(FINE_NAMES)
    dump(folder / "train", cifar100_batch(noisy_rows(n, 0, 1), [i % k for i in range(n)]))
    dump(folder / "test", cifar100_batch(noisy_rows(n, 100, 2), [i % k for i in range(n)]))
    dump(folder / "meta", {b"fine_label_names": FINE_NAMES, b"coarse_label_names": COARSE_NAMES})
    return root


def data_overrides(text: str, tmp_path: Path) -> list[str]:
    """CLI overrides that point a config's image source at tiny files in ``tmp_path``."""
    source = "--data.init_args.source.init_args"
    num_classes = "--model.init_args.model.init_args.num_classes"
    if "CIFAR100" in text:
        _write_cifar100(tmp_path / "cifar")
        return [
            f"{source}.root={tmp_path / 'cifar'}",
            f"{source}.download=false",
            f"{num_classes}=4",
        ]
    if "CIFAR10" in text:
        write_cifar10(tmp_path / "cifar", per_batch=4, n_test=20, names=CIFAR10_ALL_NAMES,
                      noise_seed=0)  # fmt: skip
        return [f"{source}.root={tmp_path / 'cifar'}", f"{source}.download=false"]
    if "ImageFolder" in text:
        return [f"{source}.root={_write_pins(tmp_path / 'pins')}", f"{num_classes}=3"]
    return []


def fit(args: list[str], tmp_path: Path) -> None:
    build_cli(
        ["fit", *args, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}",
         "--trainer.enable_progress_bar=false"]
    )  # fmt: skip


def test_every_fragment_is_paired_and_every_experiment_found() -> None:
    assert sorted(PAIRS) == _names("data")
    assert sorted(PAIRS.values()) == sorted(set(_names("model")) - {"vit_cifar10.yaml"})
    assert {"digits_cnn.yaml", "mnist5k_cnn.yaml", "cifar10_resnet18.yaml"} <= set(EXPERIMENTS)
    assert {"digits_table.yaml", "digits_table_k1.yaml", "mnist5k_table.yaml"} == set(TABLES)
    assert _names("method") == ["dsda.yaml", "finetune.yaml", "gkt.yaml", "ssd.yaml", "unsir.yaml"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # checkpoint and audit dirs in the configs are relative
    path = CONFIGS / "experiment" / FAMILY / name
    extra = data_overrides(path.read_text(), tmp_path)
    if "finetune" in name or "dsda" in name:
        # Unlearns the digits Original: train that (2 steps) where the config expects it.
        fit(["--config", str(CONFIGS / "experiment" / FAMILY / "digits_cnn.yaml")], tmp_path)
        cli = build_cli(
            ["--config", str(CONFIGS / "experiment" / FAMILY / "digits_cnn.yaml"),
             "--trainer.max_steps=2", "--trainer.logger=false", "--trainer.callbacks=[]",
             "--trainer.enable_progress_bar=false"],
            run=False,
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        cli.trainer.save_checkpoint(tmp_path / "runs" / "digits_cnn" / "checkpoints" / "last.ckpt")
    fit(
        ["--config", str(path), *extra, f"--trainer.logger.init_args.save_dir={tmp_path}"], tmp_path
    )


@pytest.mark.parametrize("data", sorted(PAIRS))
def test_data_and_model_fragments(data: str, tmp_path: Path) -> None:
    text = (CONFIGS / "data" / FAMILY / data).read_text()
    fit(
        ["--config", str(CONFIGS / "data" / FAMILY / data),
         "--config", str(CONFIGS / "model" / FAMILY / PAIRS[data]),
         "--trainer.logger=false", *data_overrides(text, tmp_path)],
        tmp_path,
    )  # fmt: skip


def test_vit_cifar10_model_fragment(tmp_path: Path) -> None:
    text = (CONFIGS / "data" / FAMILY / "cifar10.yaml").read_text()
    fit(
        ["--config", str(CONFIGS / "data" / FAMILY / "cifar10.yaml"),
         "--config", str(CONFIGS / "model" / FAMILY / "vit_cifar10.yaml"),
         "--trainer.logger=false", *data_overrides(text, tmp_path)],
        tmp_path,
    )  # fmt: skip


def _original_checkpoint(tmp_path: Path) -> Path:
    """A digits Original trained for 2 steps, saved where a method config can name it."""
    cli = build_cli(
        ["--config", str(CONFIGS / "experiment" / FAMILY / "digits_cnn.yaml"),
         "--trainer.max_steps=2", "--trainer.logger=false", "--trainer.callbacks=[]",
         "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"],
        run=False,
    )  # fmt: skip
    cli.trainer.fit(cli.model, cli.datamodule)
    path = tmp_path / "original" / "last.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


# GKT's gate keeps generated samples the teacher gives every forget class <= 1%: a 2-step
# teacher is near uniform, so the gate is opened and the budget cut for a config check.
METHOD_EXTRA = {
    "gkt.yaml": ["--trainer.callbacks.threshold=1.0", "--trainer.callbacks.pseudo_batches=2",
                 "--trainer.callbacks.generator_width=16"],
}  # fmt: skip


@pytest.mark.parametrize("method", _names("method"))
def test_method_config_on_the_digits_stack(method: str, tmp_path: Path) -> None:
    # The command of every method config's header: the override names the checkpoint of the
    # method callback (the last entry; the audit is first so it sees the Original).
    text = (CONFIGS / "method" / FAMILY / method).read_text()
    callbacks = yaml.safe_load(text)["trainer"]["callbacks"]
    assert callbacks[0]["class_path"] == "lit_unlearn.callbacks.ClassAudit"
    assert "--trainer.callbacks.checkpoint=" in text
    fit(
        ["--config", str(CONFIGS / "experiment" / FAMILY / "digits_cnn.yaml"),
         "--config", str(CONFIGS / "method" / FAMILY / method),
         "--data.init_args.forget_classes=[3]", "--trainer.logger=false",
         f"--trainer.callbacks.checkpoint={_original_checkpoint(tmp_path)}",
         *METHOD_EXTRA.get(method, [])],
        tmp_path,
    )  # fmt: skip
