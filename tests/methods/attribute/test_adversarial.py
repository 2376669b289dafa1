"""AdversarialConfusion as a Lightning callback: it hides a planted attribute, its heads are
seeded identically on every rank, it resumes, and it refuses bad settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.methods.attribute.adversarial import AdversarialConfusion
from lit_unlearn.methods.attribute.base import permuted_codes
from tests.methods.attribute.test_unlearning import (
    bare_trainer,
    dd_data,
    df_data,
    gender_leak,
    load,
    trained,
)

__all__ = ["trained"]  # the module-scoped fixture, shared with test_unlearning


def test_df_confusion_hides_gender_and_keeps_items(trained: Path, tmp_path: Path) -> None:
    original = load(trained)
    dm = df_data(trained)
    before = gender_leak(original, dm.user_attributes)
    pl.seed_everything(0, verbose=False)
    conf = AdversarialConfusion(
        checkpoint=str(trained),
        attributes=["gender"],
        lr=0.01,
        bounds=(0.5, 1.0),
        hidden=32,
        head_warmup=100,
        refresh_every=25,
    )
    task = load(trained)
    bare_trainer(tmp_path, max_epochs=200, callbacks=[conf]).fit(task, dm)
    after = gender_leak(task, dm.user_attributes)
    assert before > 0.75, before
    assert abs(after - 0.5) < 0.08, (before, after)
    assert torch.equal(task.model.item_parameters()[0], original.model.item_parameters()[0])
    assert float(conf.alpha_trace.min()) >= 0.5 - 1e-6
    assert task.unlearning is None


def test_default_mgda_with_zero_lower_bound_keeps_the_model(trained: Path, tmp_path: Path) -> None:
    """DF retention has zero gradient at the original model, so MGDA over [0, 1] puts all
    weight on it and nothing moves: why the default bounds start at 0.5 (documented)."""
    conf = AdversarialConfusion(
        checkpoint=str(trained), attributes=["gender"], bounds=(0.0, 1.0), head_warmup=10
    )
    task = load(trained)
    bare_trainer(tmp_path, max_epochs=3, callbacks=[conf]).fit(task, df_data(trained))
    torch.testing.assert_close(task.user_representation(), load(trained).user_representation())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"folds": 1}, "folds"),
        ({"hidden": 0}, "hidden"),
        ({"layers": 0}, "layers"),
        ({"head_lr": 0.0}, "head_lr"),
        ({"head_lr": float("nan")}, "head_lr"),
        ({"head_steps": 0}, "head_steps"),
        ({"head_warmup": -1}, "head_warmup"),
        ({"refresh_every": 1.5}, "refresh_every"),
        ({"bounds": (0.7, 0.2)}, "bounds"),
        ({"head_weight_decay": -1.0}, "head_weight_decay"),
        ({"retention_metric": "cosine"}, "retention_metric"),
        ({"margin": -0.1}, "margin"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdversarialConfusion(**kwargs)


def test_a_class_smaller_than_the_folds_is_a_clear_error(trained: Path, tmp_path: Path) -> None:
    conf = AdversarialConfusion(
        checkpoint=str(trained), attributes=["gender"], folds=200, head_warmup=1
    )
    with pytest.raises(ValueError, match="fewer than folds"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[conf]).fit(load(trained), df_data(trained))


class RecordRepresentation(pl.Callback):
    """Writes every rank's final representation and alpha_u trace (the DDP test)."""

    def __init__(self, conf: AdversarialConfusion, out: str) -> None:
        self.conf, self.out = conf, out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rep = pl_module.user_representation()  # type: ignore[operator]
        Path(f"{self.out}.{trainer.global_rank}").write_text(
            json.dumps({"rep": rep.tolist(), "alpha": self.conf.alpha_trace.tolist()})
        )


@pytest.mark.ddp
def test_df_confusion_is_identical_on_one_and_two_processes(trained: Path, tmp_path: Path) -> None:
    """The heads train on the full population's representation with seeded folds and
    initialisation, so every rank holds the same heads and the same push (with a refresh in
    the run)."""
    results = {}
    for devices in (1, 2):
        conf = AdversarialConfusion(
            checkpoint=str(trained),
            lr=0.01,
            bounds=(0.5, 1.0),
            hidden=16,
            head_warmup=20,
            refresh_every=3,
            privacy_seed=5,
        )
        rec = RecordRepresentation(conf, str(tmp_path / f"r{devices}"))
        kwargs: dict[str, Any] = {"devices": devices}
        if devices > 1:
            kwargs["strategy"] = "ddp_spawn"
        bare_trainer(tmp_path, max_epochs=5, callbacks=[conf, rec], **kwargs).fit(
            load(trained), df_data(trained)
        )
        results[devices] = [
            json.loads((tmp_path / f"r{devices}.{r}").read_text()) for r in range(devices)
        ]
    one = results[1][0]
    for rank in results[2]:
        torch.testing.assert_close(
            torch.tensor(rank["rep"]), torch.tensor(one["rep"]), rtol=1e-4, atol=1e-5
        )
        assert rank["alpha"] == pytest.approx(one["alpha"], abs=1e-6)


def test_resume_restores_the_heads(trained: Path, tmp_path: Path) -> None:
    """A fit resumed from an unlearning checkpoint continues with the saved heads, folds and
    head optimiser: the same final representation as the uninterrupted run."""

    def run(epochs: int, ckpt_path: str | None = None) -> tuple[torch.Tensor, pl.Trainer]:
        pl.seed_everything(0, verbose=False)
        conf = AdversarialConfusion(
            checkpoint=str(trained),
            attributes=["gender"],
            lr=0.01,
            bounds=(0.5, 1.0),
            hidden=16,
            head_warmup=20,
            privacy_seed=1,
        )
        task = load(trained)
        trainer = bare_trainer(tmp_path, max_epochs=epochs, callbacks=[conf])
        trainer.fit(task, df_data(trained), ckpt_path=ckpt_path)
        return task.user_representation(), trainer

    full, _ = run(6)
    _, trainer = run(3)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    (entry,) = [v for k, v in state.items() if "AdversarialConfusion" in k]
    assert set(entry["heads"]) == {"gender"} and entry["round"] == 1
    resumed, _ = run(6, str(ckpt))
    torch.testing.assert_close(resumed, full, rtol=1e-5, atol=1e-6)


def test_dd_mode_runs_with_the_recommender_loss(trained: Path, tmp_path: Path) -> None:
    conf = AdversarialConfusion(
        checkpoint=str(trained),
        mode="dd",
        lr=0.005,
        dd_anchor=1.0,
        bounds=(0.1, 1.0),
        hidden=16,
        head_warmup=10,
    )
    task = load(trained)
    bare_trainer(tmp_path, max_epochs=1, limit_train_batches=3, callbacks=[conf]).fit(
        task, dd_data()
    )
    assert conf.alpha_trace.numel() == 3
    assert not torch.equal(task.user_representation(), load(trained).user_representation())


def test_score_retention_moves_users_along_what_items_ignore(trained: Path, tmp_path: Path) -> None:
    """With ``retention_metric='scores'`` the DF retention is the users' score change; it still
    hides gender, and per unit of representation moved it changes the scores less than the
    Euclidean retention does."""
    original = load(trained)
    dm = df_data(trained)
    moved = {}
    for metric in ("euclidean", "scores"):
        pl.seed_everything(0, verbose=False)
        conf = AdversarialConfusion(
            checkpoint=str(trained),
            attributes=["gender"],
            lr=0.01,
            hidden=32,
            retention_metric=metric,
        )
        task = load(trained)
        bare_trainer(tmp_path, max_epochs=100, callbacks=[conf]).fit(task, dm)
        rep, items = task.model.embed()
        rep0, _ = original.model.embed()
        delta = (rep - rep0).detach()
        moved[metric] = float((delta @ items.detach().T).pow(2).mean() / delta.pow(2).mean())
        assert abs(gender_leak(task, dm.user_attributes) - 0.5) < 0.1, metric
    assert moved["scores"] < moved["euclidean"], moved


def test_permuted_codes_keep_class_sizes_and_cut_the_link() -> None:
    codes = {
        "gender": torch.tensor([0, 1, 1, -1, 0, 1, 0, 0, 1, 1] * 5),
        "age": torch.arange(50) % 3,
    }
    shuffled = permuted_codes(codes, 7)
    for name, c in codes.items():
        s = shuffled[name]
        assert torch.equal(s < 0, c < 0)  # unlabelled users stay unlabelled
        assert torch.equal(torch.bincount(s[s >= 0]), torch.bincount(c[c >= 0]))
        assert not torch.equal(s, c)
    again = permuted_codes(codes, 7)
    assert all(torch.equal(again[n], shuffled[n]) for n in codes)  # the same on every rank
    with pytest.raises(ValueError, match="permute_labels"):
        AdversarialConfusion(permute_labels=True)


def test_the_negative_control_unlearns_permuted_labels(trained: Path, tmp_path: Path) -> None:
    """``permute_labels`` makes the callback see shuffled codes (same sizes) and run."""
    dm = df_data(trained)
    conf = AdversarialConfusion(
        checkpoint=str(trained), attributes=["gender"], hidden=16, head_warmup=5, permute_labels=3
    )
    bare_trainer(tmp_path, max_epochs=2, callbacks=[conf]).fit(load(trained), dm)
    real = dm.user_attributes.codes["gender"]
    seen = conf._codes["gender"].cpu()
    assert not torch.equal(seen, real)
    assert torch.equal(torch.bincount(seen[seen >= 0]), torch.bincount(real[real >= 0]))


@pytest.mark.parametrize("name", ["U2UR", "D2DR", "CalibratedErasure"])
def test_the_baselines_and_the_erasure_take_the_negative_control(
    name: str, trained: Path, tmp_path: Path
) -> None:
    """U2U-R, D2D-R and CalibratedErasure run the negative control too (the leakage table's
    rows of those names need it): the codes they act on are the shuffled ones, class sizes
    kept, and a bad seed is refused."""
    from lit_unlearn.methods.attribute import baselines, erasure

    cls = getattr(baselines, name, None) or getattr(erasure, name)
    with pytest.raises(ValueError, match="permute_labels"):
        cls(permute_labels=True)
    dm = df_data(trained)
    callback = cls(checkpoint=str(trained), attributes=["gender"], permute_labels=3)
    bare_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(load(trained), dm)
    real = dm.user_attributes.codes["gender"]
    seen = callback._codes["gender"].cpu()
    assert not torch.equal(seen, real)
    assert torch.equal(seen, permuted_codes({"gender": real}, 3)["gender"])
