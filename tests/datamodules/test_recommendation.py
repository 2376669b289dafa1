"""RecommendationData: both modes, checkpointed user index, evaluation batches, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from lit_unlearn.datamodules import RecommendationData, Synthetic, UserIndex


class NoInteractions(Synthetic):
    """A source whose interaction file must never be read (data-free mode)."""

    def load_interactions(self) -> pd.DataFrame:
        raise AssertionError("data-free mode read the interactions")


def small(**kwargs: Any) -> RecommendationData:
    kwargs.setdefault("num_eval_negatives", 20)
    return RecommendationData(
        source=Synthetic(num_users=80, num_items=60, interactions_per_user=12), **kwargs
    )


def test_data_dependent_sizes_split_and_attributes() -> None:
    dm = small()
    assert dm.num_users == 80 and dm.num_items <= 60
    split = dm.split
    assert len(split.test) == len(split.val) == 80  # leave-one-out, every user has >= 3 rows
    attrs = dm.user_attributes
    assert attrs.names == ["gender", "age", "occupation"]
    assert attrs.classes["gender"] == ["F", "M"]
    assert attrs.num_classes("age") == 7
    assert 0.1 < attrs.shadow.float().mean() < 0.3
    assert dm.train_graph.shape == (2, len(split.train))


def test_same_seed_same_data_different_seed_different_shadow() -> None:
    a, b, c = small(seed=0), small(seed=0), small(seed=1)
    assert torch.equal(a.user_attributes.shadow, b.user_attributes.shadow)
    assert (a.split.test == b.split.test).all()
    assert not torch.equal(a.user_attributes.shadow, c.user_attributes.shadow)


def test_eval_batches_have_masks_and_fixed_negatives() -> None:
    dm = small(eval_batch_size=16)
    full, sampled = dm.val_dataloader()
    seen_train = set(map(tuple, dm.split.train.tolist()))
    for batch in full:
        assert (
            batch["exclude"].shape == batch["targets"].shape == (len(batch["user"]), dm.num_items)
        )
        assert (batch["targets"].sum(1) == 1).all()
        assert not (batch["exclude"] & batch["targets"]).any()
        u = int(batch["user"][0])
        assert {i for i in range(dm.num_items) if batch["exclude"][0, i]} == {
            i for (uu, i) in seen_train if uu == u
        }
    neg = torch.cat([b["negatives"] for b in sampled])
    assert neg.shape == (80, 20)
    again = torch.cat([b["negatives"] for b in small(eval_batch_size=16).val_dataloader()[1]])
    assert torch.equal(neg, again)


def test_data_free_reads_no_interactions_and_aligns_users(tmp_path: Path) -> None:
    dm = small()
    index = tmp_path / "index.json"
    dm.save_index(index)
    df = RecommendationData(
        source=NoInteractions(num_users=80, num_items=60, interactions_per_user=12),
        mode="data_free",
        user_index=str(index),
    )
    assert df.num_users == dm.num_users and df.num_items == dm.num_items
    for name in dm.user_attributes.names:
        assert torch.equal(df.user_attributes.codes[name], dm.user_attributes.codes[name])
    assert df.val_dataloader() == [] and df.test_dataloader() == []
    batch = next(iter(df.train_dataloader()))
    assert set(batch) == {"user"}
    with pytest.raises(RuntimeError, match="no interactions"):
        _ = df.split


def test_data_free_index_from_checkpoint(tmp_path: Path) -> None:
    dm = small()
    ckpt = tmp_path / "m.ckpt"
    torch.save({RecommendationData.__qualname__: dm.state_dict(), "state_dict": {}}, ckpt)
    assert UserIndex.load(ckpt).user_ids == dm.index.user_ids
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="holds no RecommendationData state"):
        UserIndex.load(tmp_path / "bad.ckpt")
    with pytest.raises(FileNotFoundError):
        UserIndex.load(tmp_path / "absent.ckpt")
    # A pickle naming a class that no longer exists (as a corrupted or foreign file can): a
    # clear error, not the unpickler's AttributeError.
    import tests.datamodules.test_recommendation as this

    this.Vanishing = type("Vanishing", (), {"__module__": this.__name__})  # type: ignore[attr-defined]
    torch.save({"x": this.Vanishing()}, tmp_path / "gone.ckpt")  # type: ignore[attr-defined]
    del this.Vanishing  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"not a readable checkpoint.*AttributeError"):
        UserIndex.load(tmp_path / "gone.ckpt")


def test_load_state_dict_refuses_other_user_order() -> None:
    dm = small()
    state = dm.state_dict()
    dm.load_state_dict(state)  # same order: fine
    state["user_ids"] = list(reversed(state["user_ids"]))
    with pytest.raises(ValueError, match="different user/item order"):
        dm.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "data_free"}, "needs user_index"),
        ({"mode": "data_free", "user_index": "index.json", "attributes": []}, "at least one"),
        ({"attributes": ["gender", "gender"]}, "repeat"),
        ({"protocols": ["fancy"]}, "protocols"),
        ({"batch_size": 0}, "batch_size"),
        ({"shadow_stratify": "zip"}, "shadow_stratify"),
    ],
)
def test_bad_configs_fail_early(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_too_many_eval_negatives_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot sample 99"):
        small(num_eval_negatives=99).setup("fit")


def test_unknown_attribute_names_the_available_ones() -> None:
    with pytest.raises(KeyError, match="religion"):
        small(attributes=["religion"]).setup("fit")


def test_ratio_split_and_balance() -> None:
    dm = small(split="ratio", train_ratio=0.8, balance="gender")
    codes = dm.user_attributes.codes["gender"]
    assert abs(int((codes == 0).sum()) - int((codes == 1).sum())) <= 2
    assert len(dm.split.test) >= dm.num_users


def test_user_index_reads_the_key_lightning_stores_the_datamodule_under() -> None:
    from lit_unlearn.datamodules import RecommendationData
    from lit_unlearn.datamodules.index import STATE_KEY

    # Lightning files a DataModule's state_dict under its class's __qualname__.
    assert RecommendationData.__qualname__ == STATE_KEY
