"""The classifier-throughput benchmark runs end to end on tiny sizes and writes its reports."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.classifier_throughput import InMemoryImages, device_arg, main, random_images

ROW_KEYS = {
    "model",
    "data",
    "images",
    "image_shape",
    "batch_size",
    "steps_per_epoch",
    "optimizer",
    "lr",
    "repeats",
    "plain",
    "lit",
    "ratio",
    "fit_ratio",
    "ratio_min_epoch",
    "ratio_cpu_time",
    "ratio_median_step",
    "overhead_ms_per_step",
    "max_abs_mean_loss_diff",
}
SIDE_KEYS = {
    "epoch_s",
    "epoch_cpu_s",
    "fit_s",
    "step_s",
    "mean_loss",
    "steps",
    "median_epoch_s",
    "min_epoch_s",
    "median_epoch_cpu_s",
    "median_step_s",
    "median_fit_s",
    "images_per_s",
}


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """main() sets torch's thread count and quietens two loggers: undo it for later tests."""
    threads = torch.get_num_threads()
    levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lit_unlearn")}
    yield
    torch.set_num_threads(threads)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_process_state")
def test_main_on_tiny_sizes_writes_json_and_markdown(tmp_path: Path) -> None:
    stem = tmp_path / "bench"
    # fmt: off
    result = main([
        "--images", "32", "--batch-size", "16", "--width", "4", "--repeats", "1",
        "--small-images", "64", "--small-batch-size", "32", "--small-repeats", "1",
        "--small-warmup-batches", "1", "--threads", "1", "--out", str(stem),
    ])
    # fmt: on
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data == json.loads(json.dumps(result))
    assert {"machine", "machine_info", "threads", "device", "rows", "load_average"} <= set(data)
    assert data["device"] == "cpu" and data["threads"]["intra_op"] == 1
    assert {"torch", "lightning", "cpu"} <= set(data["machine_info"])
    assert [r["model"] for r in data["rows"]] == ["CifarResNet18 (width 4)", "SmallCNN"]
    for row, (n, steps) in zip(data["rows"], [(32, 2), (64, 2)], strict=True):
        assert set(row) >= ROW_KEYS
        assert row["images"] == n and row["steps_per_epoch"] == steps
        for side in ("plain", "lit"):
            assert set(row[side]) >= SIDE_KEYS
            assert len(row[side]["epoch_s"]) == 1 and row[side]["steps"] == [steps]
            assert row[side]["images_per_s"] > 0
            assert [len(s) for s in row[side]["step_s"]] == [steps]  # one interval per step
        assert row["ratio"] > 0
        # Same init, data order and optimiser: the two contenders compute the same losses.
        assert row["max_abs_mean_loss_diff"] < 1e-4
    md = stem.with_suffix(".md").read_text()
    assert "| model | data | N | batch |" in md and "SmallCNN" in md and "ratio (epoch)" in md


def test_random_images_are_seeded_balanced_uint8() -> None:
    a, b = random_images(40, (3, 32, 32), seed=3), random_images(40, (3, 32, 32), seed=3)
    assert a.images.dtype == torch.uint8 and a.images.shape == (40, 3, 32, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.class_counts().tolist() == [4] * 10
    assert InMemoryImages(a, "x").load("test") is a
    with pytest.raises(ValueError, match="at least 10"):
        random_images(5, (1, 8, 8), seed=0)


def test_auto_device_falls_back_to_what_the_machine_has() -> None:
    assert device_arg("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_arg("cpu") == torch.device("cpu")
