"""Attribute-unlearning callbacks (AttrCloak, U2U-R, D2D-R) on a leaky synthetic recommender."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from lit_unlearn.attacks.audit import audit_embeddings, make_attacker
from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.methods.attribute.attrcloak import AttrCloak
from lit_unlearn.methods.attribute.baselines import D2DR, U2UR
from lit_unlearn.models import MF, NCF, LightGCN, Recommender
from lit_unlearn.optim import FixedWeights
from lit_unlearn.tasks import RecommenderTask

SOURCE: dict[str, Any] = {
    "num_users": 300,
    "num_items": 150,
    "interactions_per_user": 20,
    "attribute_signal": 1.5,
    "seed": 2,
}


class NoInteractions(Synthetic):
    def load_interactions(self) -> pd.DataFrame:
        raise AssertionError("data-free unlearning read the interactions")


def bare_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        **kwargs,
    )


def dd_data(**kwargs: Any) -> RecommendationData:
    return RecommendationData(
        source=Synthetic(**SOURCE), num_eval_negatives=50, attributes=["gender", "age"], **kwargs
    )


def df_data(ckpt: Path, **kwargs: Any) -> RecommendationData:
    return RecommendationData(
        source=NoInteractions(**SOURCE),
        mode="data_free",
        user_index=str(ckpt),
        attributes=["gender", "age"],
        batch_size=10_000,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    pl.seed_everything(0, verbose=False)
    dm = dd_data()
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 16), lr=0.02)
    trainer = bare_trainer(root, max_epochs=8, limit_val_batches=0)
    trainer.fit(task, dm)
    ckpt = root / "trained.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def tower_backbone(name: str, dm: RecommendationData) -> Recommender:
    """A 16-d NCF (user tower) or 2-layer LightGCN (propagated users) sized for ``dm``."""
    if name == "ncf":
        return NCF(dm.num_users, dm.num_items, 16)
    return LightGCN(dm.num_users, dm.num_items, 16, 2)


def load(ckpt: Path) -> RecommenderTask:
    dm = dd_data()
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 16))
    task.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    return task


def gender_leak(task: RecommenderTask, attrs: Any) -> float:
    mlp = make_attacker("mlp", seed=0, lr=1e-2, max_epochs=100)
    res = audit_embeddings(
        task.user_representation(), attrs, attackers=[mlp], names=["gender"], seed=0
    )
    return res[0].balanced_accuracy


def test_attrcloak_df_hides_gender_and_keeps_items(trained: Path, tmp_path: Path) -> None:
    original = load(trained)
    dm = df_data(trained)
    before = gender_leak(original, dm.user_attributes)
    # alpha_u >= 0.9: the privacy end of the Pareto front (plain MGDA stops earlier, see below).
    cloak = AttrCloak(checkpoint=str(trained), lr=0.01, df_bounds=(0.9, 1.0))
    task = load(trained)
    bare_trainer(tmp_path, max_epochs=300, callbacks=[cloak]).fit(task, dm)
    after = gender_leak(task, dm.user_attributes)
    assert before > 0.75, before  # the synthetic recommender leaks gender
    assert abs(after - 0.5) < 0.08, (before, after)
    # Parameter self-sharing: item side untouched, user side moved.
    assert torch.equal(task.model.item_parameters()[0], original.model.item_parameters()[0])
    assert not torch.equal(task.model.user_parameters()[0], original.model.user_parameters()[0])
    assert cloak.last_weights is not None and 0.9 - 1e-6 <= float(cloak.last_weights[0]) <= 1.0
    assert task.unlearning is None  # detached after fit


def test_attrcloak_df_default_mgda_lowers_the_bound_within_bounds(
    trained: Path, tmp_path: Path
) -> None:
    dm = df_data(trained)
    cloak = AttrCloak(checkpoint=str(trained), lr=0.01)
    task = load(trained)
    cloak._codes = dict(dm.user_attributes.codes)
    cloak._num_classes = {n: dm.user_attributes.num_classes(n) for n in dm.user_attributes.names}
    start = float(cloak.privacy_loss(task.user_representation())[0])
    bare_trainer(tmp_path, max_epochs=100, callbacks=[cloak]).fit(task, dm)
    end = float(cloak.privacy_loss(task.user_representation())[0])
    assert end < 0.9 * start, (start, end)
    # DF default bounds of the paper: alpha_u in [0.1, 1]
    assert cloak.last_weights is not None and 0.1 - 1e-6 <= float(cloak.last_weights[0]) <= 1.0


def test_attrcloak_dd_runs_and_evaluates(trained: Path, tmp_path: Path) -> None:
    task = load(trained)
    dm = dd_data()
    cloak = AttrCloak(checkpoint=str(trained), attributes=["gender"], lr=0.005)
    trainer = bare_trainer(tmp_path, max_epochs=1, callbacks=[cloak])
    trainer.fit(task, dm)
    metrics = trainer.callback_metrics
    assert "val/sampled/hr@10" in metrics and "unlearn/alpha_u" in metrics
    assert 0.0 <= float(metrics["unlearn/alpha_u"]) <= 1.0
    assert cloak.mode == "dd"


@pytest.mark.parametrize("method", [U2UR, D2DR])
def test_fixed_weight_baselines_reduce_their_loss(
    method: type, trained: Path, tmp_path: Path
) -> None:
    task = load(trained)
    dm = df_data(trained)
    cb = method(checkpoint=str(trained), lr=0.01)
    rep0 = task.user_representation()
    cb._codes = dict(dm.user_attributes.codes)
    cb._num_classes = {n: dm.user_attributes.num_classes(n) for n in dm.user_attributes.names}
    start = float(cb.privacy_loss(rep0)[0])
    bare_trainer(tmp_path, max_epochs=50, callbacks=[cb]).fit(task, dm)
    end = float(cb.privacy_loss(task.user_representation())[0])
    assert end < 0.5 * start, (start, end)
    assert isinstance(cb.combiner, FixedWeights)


def test_fixed_alpha_ablation_uses_the_given_weight(trained: Path, tmp_path: Path) -> None:
    task = load(trained)
    cloak = AttrCloak(checkpoint=str(trained), combiner=FixedWeights([0.4, 0.6]))
    bare_trainer(tmp_path, max_epochs=3, callbacks=[cloak]).fit(task, df_data(trained))
    assert cloak.last_weights is not None
    assert cloak.last_weights.tolist() == pytest.approx([0.4, 0.6])
    # one alpha_u per step (data-free: one full-population step per epoch), all 0.4
    assert cloak.alpha_trace.tolist() == pytest.approx([0.4] * 3)


def test_bad_configurations(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        AttrCloak(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AttrCloak(checkpoint=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="shrinkage"):
        AttrCloak(shrinkage=-1.0)
    with pytest.raises(ValueError, match="precision"):
        AttrCloak(precision="float16")  # type: ignore[arg-type]
    task = load(trained)
    with pytest.raises(KeyError, match="religion"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[AttrCloak(attributes=["religion"])]).fit(
            task, df_data(trained)
        )
    task = load(trained)
    with pytest.raises(ValueError, match="needs interactions"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[AttrCloak(mode="dd")]).fit(
            task, df_data(trained)
        )


def test_privacy_subsets_depend_only_on_seed_and_step() -> None:
    """Fresh users every step, the same users for the same (seed, step): DDP ranks and resumed
    runs draw alike; fraction 1 is the paper's whole population."""
    cloak = AttrCloak(privacy_fraction=0.25, privacy_seed=3)
    cpu = torch.device("cpu")
    a, b = cloak.privacy_subset(100, 7, cpu), cloak.privacy_subset(100, 7, cpu)
    assert a is not None and b is not None and torch.equal(a, b)
    assert a.numel() == 25 and a.unique().numel() == 25 and bool((a[1:] > a[:-1]).all())
    c = cloak.privacy_subset(100, 8, cpu)
    assert c is not None and not torch.equal(a, c)
    other = AttrCloak(privacy_fraction=0.25, privacy_seed=4).privacy_subset(100, 7, cpu)
    assert other is not None and not torch.equal(a, other)
    assert AttrCloak().privacy_subset(100, 7, cpu) is None
    tiny = AttrCloak(privacy_fraction=0.001).privacy_subset(100, 0, cpu)
    assert tiny is not None and tiny.numel() == 2  # a class statistic needs two users
    for bad in (0.0, -0.5, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="privacy_fraction"):
            AttrCloak(privacy_fraction=bad)


def test_privacy_subset_restricts_what_the_privacy_loss_sees(trained: Path, tmp_path: Path) -> None:
    """Each step's MI bound is computed on that step's users only (their rows and codes)."""
    seen: list[tuple[int, int]] = []

    class Spy(AttrCloak):
        def privacy_loss(self, representation: torch.Tensor) -> Any:
            seen.append((representation.shape[0], next(iter(self._codes.values())).shape[0]))
            return super().privacy_loss(representation)

    task = load(trained)
    n = task.representation().shape[0]
    cloak = Spy(checkpoint=str(trained), lr=0.01, privacy_fraction=0.5)
    bare_trainer(tmp_path, max_epochs=2, callbacks=[cloak]).fit(task, df_data(trained))
    k = round(0.5 * n)
    assert seen and all(rows == codes == k for rows, codes in seen)
    assert next(iter(cloak._codes.values())).shape[0] == n  # the full codes come back


class RecordWeights(pl.Callback):
    """Writes every rank's alpha_u history to a JSON file (for the DDP test)."""

    def __init__(self, cloak: AttrCloak, out: str) -> None:
        self.cloak, self.out, self.history = cloak, out, []  # type: ignore[var-annotated]

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        assert self.cloak.last_weights is not None
        self.history.append(float(self.cloak.last_weights[0]))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        Path(f"{self.out}.{trainer.global_rank}").write_text(json.dumps(self.history))


@pytest.mark.ddp
@pytest.mark.parametrize(
    "options",
    [
        {"privacy_fraction": 1.0},
        {"privacy_fraction": 0.5},
        {"privacy_moments": "covariance", "covariance_null": 4, "final_erasure": True},
        {"privacy_moments": "crossfit", "crossfit_directions": 2},
        {"privacy_moments": "covariance", "final_transport": True, "final_erasure": True},
    ],
    ids=["paper", "subsets", "covariance-null-erasure", "crossfit", "covariance-transport"],
)
def test_df_unlearning_is_identical_on_one_and_two_processes(
    trained: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    """Also with per-step privacy subsets (every rank draws the same users at every step), and
    with the covariance term held at its permutation null (the same permutations on every
    rank) followed by the calibrated erasure, and with the relabelling transport (the same
    relabelling on every rank) before it."""
    results = {}
    for devices in (1, 2):
        task = load(trained)
        cloak = AttrCloak(checkpoint=str(trained), lr=0.01, **options)
        rec = RecordWeights(cloak, str(tmp_path / f"w{devices}"))
        kwargs: dict[str, Any] = {"devices": devices}
        if devices > 1:
            kwargs["strategy"] = "ddp_spawn"
        bare_trainer(tmp_path, max_epochs=5, callbacks=[cloak, rec], **kwargs).fit(
            task, df_data(trained)
        )
        results[devices] = task.user_representation()
    torch.testing.assert_close(results[2], results[1], rtol=1e-4, atol=1e-5)
    w1 = json.loads((tmp_path / "w1.0").read_text())
    w2 = [json.loads((tmp_path / f"w2.{r}").read_text()) for r in (0, 1)]
    assert w2[0] == w2[1]  # every rank computed the same MGDA weights
    assert w2[0] == pytest.approx(w1, abs=1e-6)


def two_rank_trainer(root: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """Four training batches on 2 CPU processes (ddp_spawn, gloo), no validation."""
    return bare_trainer(
        root,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        devices=2,
        strategy="ddp_spawn",
        callbacks=callbacks,
    )


@pytest.mark.ddp
def test_dd_unlearning_weights_agree_across_ranks(trained: Path, tmp_path: Path) -> None:
    task = load(trained)
    cloak = AttrCloak(checkpoint=str(trained), attributes=["gender"], lr=0.005)
    rec = RecordWeights(cloak, str(tmp_path / "dd"))
    two_rank_trainer(tmp_path, [cloak, rec]).fit(task, dd_data(batch_size=64))
    ranks = [json.loads((tmp_path / f"dd.{r}").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 4 and ranks[0] == ranks[1]


class RecordShift(pl.Callback):
    """Writes every rank's final user_shift to a file (for the DDP representation test)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, RecommenderTask)
        shift = pl_module.model.user_shift
        assert shift is not None
        torch.save(shift.detach().clone(), f"{self.out}.{trainer.global_rank}")


@pytest.mark.ddp
def test_dd_representation_target_under_ddp(tmp_path: Path) -> None:
    """The per-user shift is created before DDP wraps the model, so its gradient is all-reduced:
    both ranks take the same MGDA weights and end with the same shift, and the spawning process
    gets it back (its model had no shift before fit)."""

    pl.seed_everything(0, verbose=False)
    dm = dd_data(batch_size=64)
    task = RecommenderTask(NCF(dm.num_users, dm.num_items, 16))
    cloak = AttrCloak(attributes=["gender"], mode="dd", lr=0.01, target="representation")
    rec = RecordWeights(cloak, str(tmp_path / "w"))
    shifts = RecordShift(str(tmp_path / "shift"))
    two_rank_trainer(tmp_path, [cloak, rec, shifts]).fit(task, dm)
    weights = [json.loads((tmp_path / f"w.{r}").read_text()) for r in (0, 1)]
    assert len(weights[0]) == 4 and weights[0] == weights[1]
    per_rank = [torch.load(tmp_path / f"shift.{r}") for r in (0, 1)]
    assert float(per_rank[0].abs().max()) > 0
    torch.testing.assert_close(per_rank[0], per_rank[1], rtol=0, atol=0)
    assert task.model.user_shift is not None
    torch.testing.assert_close(task.model.user_shift.detach(), per_rank[0], rtol=0, atol=0)


@pytest.mark.parametrize("backbone", ["ncf", "lightgcn"])
def test_dd_self_sharing_updates_only_user_side(backbone: str, tmp_path: Path) -> None:
    """NCF (user tower) and LightGCN (propagated users): item side and scorer stay frozen."""
    dm = dd_data(batch_size=256)
    model = tower_backbone(backbone, dm)
    task = RecommenderTask(model)
    items_before = [p.detach().clone() for p in model.item_parameters()]
    users_before = [p.detach().clone() for p in model.user_parameters()]
    cloak = AttrCloak(attributes=["gender"], mode="dd", lr=0.01)
    bare_trainer(
        tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[cloak]
    ).fit(task, dm)
    for before, after in zip(items_before, model.item_parameters(), strict=True):
        assert torch.equal(before, after)
    assert any(
        not torch.equal(b, a) for b, a in zip(users_before, model.user_parameters(), strict=True)
    )
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again after fit


def test_df_refuses_graph_backbones(trained: Path, tmp_path: Path) -> None:

    dm = df_data(trained)
    task = RecommenderTask(LightGCN(dm.num_users, dm.num_items, 16, 2))
    with pytest.raises(ValueError, match="cannot be unlearned data-free"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[AttrCloak(mode="df")]).fit(task, dm)


@pytest.mark.parametrize("backbone", ["ncf", "lightgcn"])
def test_representation_target_moves_only_the_shift(backbone: str, tmp_path: Path) -> None:
    """target='representation': embeddings, towers and items stay; the checkpoint reloads."""
    dm = dd_data(batch_size=256)
    model = tower_backbone(backbone, dm)
    task = RecommenderTask(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cloak = AttrCloak(attributes=["gender"], mode="dd", lr=0.01, target="representation")
    trainer = bare_trainer(
        tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[cloak]
    )
    trainer.fit(task, dm)
    assert model.user_shift is not None and model.user_shift.abs().sum() > 0
    for name, p in model.named_parameters():
        if name != "user_shift":
            assert torch.equal(before[name], p), name
    graph = task.interaction_graph
    with torch.no_grad():
        base = model.user_representation(graph=graph) - model.user_shift
        model.user_shift.zero_()
        assert torch.allclose(model.user_representation(graph=graph), base)
        model.user_shift.normal_()
    ckpt = tmp_path / "unlearned.ckpt"
    trainer.save_checkpoint(ckpt)
    fresh = tower_backbone(backbone, dm)
    again = RecommenderTask(fresh)
    again.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])  # strict
    assert again.model.user_shift is not None
    with torch.no_grad():
        assert torch.allclose(
            again.model.user_representation(graph=graph), model.user_representation(graph=graph)
        )


def test_representation_target_on_table_backbones_updates_the_table(
    trained: Path, tmp_path: Path
) -> None:
    """MF's representation is its table: target='representation' adds no shift."""
    task = load(trained)
    cloak = AttrCloak(checkpoint=str(trained), mode="dd", lr=0.01, target="representation")
    bare_trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[cloak]
    ).fit(task, dd_data(batch_size=256))
    assert task.model.user_shift is None
    original = load(trained)
    assert isinstance(task.model, MF) and isinstance(original.model, MF)
    assert not torch.equal(task.model.user_embedding.weight, original.model.user_embedding.weight)
    with pytest.raises(ValueError, match="representation is its embedding table"):
        task.model.enable_user_shift()
    with pytest.raises(ValueError, match="target must be"):
        AttrCloak(target="weights")  # type: ignore[arg-type]


def test_refit_from_a_checkpoint_without_shift_drops_the_old_shift(tmp_path: Path) -> None:

    dm = dd_data(batch_size=256)
    task = RecommenderTask(NCF(dm.num_users, dm.num_items, 16))
    plain = tmp_path / "plain.ckpt"
    trainer = bare_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(task, dm)
    trainer.save_checkpoint(plain)
    with torch.no_grad():
        reference = task.model.user_representation().clone()
    for _ in range(2):  # the second fit must start from the checkpoint, not the first shift
        cloak = AttrCloak(
            checkpoint=str(plain),
            attributes=["gender"],
            mode="dd",
            lr=0.01,
            target="representation",
        )
        bare_trainer(
            tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[cloak]
        ).fit(task, dm)
        assert task.model.user_shift is not None
        moved = (task.model.user_representation() - reference).abs().max()
        assert 0 < float(moved) < 0.02  # one Adam step of lr 0.01 per coordinate, not two


def test_dd_anchor_adds_eq21_to_the_dd_retention(trained: Path, tmp_path: Path) -> None:
    """DD retention = the recommender's loss + dd_anchor x the L2 to the original (mean)."""
    seen: list[tuple[float, float, float]] = []

    class Spy(AttrCloak):
        def retention_loss(self, task: Any, representation: torch.Tensor, batch: Any) -> Any:
            state = torch.random.get_rng_state()  # the same sampled negatives for both
            total = super().retention_loss(task, representation, batch)
            torch.random.set_rng_state(state)
            bpr = task.task_loss(batch)
            assert self._reference is not None
            l2 = (representation - self._reference).pow(2).sum() / representation.shape[0]
            seen.append((float(total), float(bpr), float(l2)))
            return total

    task = load(trained)
    cloak = Spy(checkpoint=str(trained), attributes=["gender"], lr=0.05, dd_anchor=4.0)
    bare_trainer(
        tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[cloak]
    ).fit(task, dd_data(batch_size=64))
    assert len(seen) == 3 and seen[0][2] == 0.0  # the first step starts at the original
    assert seen[-1][2] > 0  # the users moved, and the anchor sees it
    for total, bpr, l2 in seen:
        assert total == pytest.approx(bpr + 4.0 * l2, rel=1e-5, abs=1e-7)
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="dd_anchor"):
            AttrCloak(dd_anchor=bad)
    df = AttrCloak(checkpoint=str(trained), mode="df", dd_anchor=1.0)
    with pytest.raises(ValueError, match="only applies in mode 'dd'"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[df]).fit(load(trained), df_data(trained))


def test_privacy_attributes_narrow_the_optimised_term_not_the_erasure(
    trained: Path, tmp_path: Path
) -> None:
    terms: list[set[str]] = []

    class Spy(AttrCloak):
        def privacy_loss(self, representation: torch.Tensor) -> Any:
            loss, per = super().privacy_loss(representation)
            terms.append(set(per))
            return loss, per

    cloak = Spy(
        checkpoint=str(trained),
        attributes=["gender", "age"],
        privacy_attributes=["gender"],
        privacy_moments="covariance",
        final_erasure=True,
        erasure_permutations=3,
        lr=0.01,
    )
    bare_trainer(tmp_path, max_epochs=2, callbacks=[cloak]).fit(load(trained), df_data(trained))
    assert terms and all(t == {"gender"} for t in terms)
    assert set(cloak.erasure_results) == {"gender", "age"}  # the erasure covers both
    with pytest.raises(ValueError, match="among attributes"):
        AttrCloak(attributes=["gender"], privacy_attributes=["age"])
    for bad in ([], ["gender", "gender"]):
        with pytest.raises(ValueError, match="privacy_attributes"):
            AttrCloak(privacy_attributes=bad)
    unknown = AttrCloak(checkpoint=str(trained), privacy_attributes=["height"])
    with pytest.raises(KeyError, match="height"):
        bare_trainer(tmp_path, max_epochs=1, callbacks=[unknown]).fit(
            load(trained), df_data(trained)
        )
