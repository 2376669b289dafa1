"""The unlearning contract: any task implementing it plugs into the method callbacks.

A non-recommender task (a plain table of subject vectors, no backbone from this package, no
interactions) is unlearned by AttrCloak-DF through the contract alone; a task that does not
implement it, and DataModules that lack what a method needs, are refused with the missing
members named.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from lit_unlearn._structural import missing_members
from lit_unlearn.callbacks import AltEraser, AttrCloak, WarmStart
from lit_unlearn.datamodules.containers import UserAttributes
from lit_unlearn.datamodules.protocols import (
    AttributeData,
    ForgettingRequestData,
    InteractionData,
    conforms,
    require_data,
)
from lit_unlearn.optim import FixedWeights
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.unlearning import RepresentationTask, UnlearnableTask

N, D = 120, 6


class TableTask(RepresentationTask):
    """Subjects' vectors as one parameter table: the smallest RepresentationTask."""

    model: nn.Embedding

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.model = nn.Embedding.from_pretrained(table.clone(), freeze=False)
        self.automatic_optimization = False

    def restore_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        self.load_state_dict(state_dict)

    def task_loss(self, batch: Any) -> Tensor:
        raise AssertionError("data-free unlearning must not ask for the task loss")

    def representation(self) -> Tensor:
        return self.model.weight

    def representation_parameters(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, self.model.weight)]

    def enable_representation_offset(self) -> nn.Parameter | None:
        return None

    @property
    def representation_offset(self) -> nn.Parameter | None:
        return None

    @property
    def representation_needs_data(self) -> bool:
        return False

    @property
    def has_training_data(self) -> bool:
        return False

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        assert self.unlearning is not None, "this task only exists to be unlearned"
        return self.unlearning.training_step(self, batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        assert self.unlearning is not None
        return self.unlearning.configure_optimizer(self)


class AttributesOnly(pl.LightningDataModule):
    """A data-free DataModule: attribute labels and a dummy step per batch, nothing else."""

    mode: Literal["data_dependent", "data_free"] = "data_free"

    def __init__(self, codes: Tensor) -> None:
        super().__init__()
        shadow = torch.zeros(len(codes), dtype=torch.bool)
        shadow[::5] = True
        self._attributes = UserAttributes({"group": codes}, {"group": ["a", "b"]}, shadow)

    @property
    def user_attributes(self) -> UserAttributes:
        return self._attributes

    def train_dataloader(self) -> Iterator[dict[str, Tensor]]:
        return iter([{"user": torch.arange(N)}] * 150)


def _leaky_table() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    codes = (torch.arange(N) % 2).long()
    table = torch.randn(N, D, generator=g) + 1.5 * codes.unsqueeze(1).float()
    return table, codes


def _gap(table: Tensor, codes: Tensor) -> float:
    return float((table[codes == 1].mean(0) - table[codes == 0].mean(0)).norm())


def test_attrcloak_unlearns_any_representation_task(tmp_path: Path) -> None:
    table, codes = _leaky_table()
    task = TableTask(table)
    cloak = AttrCloak(mode="df", lr=0.1, combiner=FixedWeights([1.0, 0.0]))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[cloak],
    )
    trainer.fit(task, datamodule=AttributesOnly(codes))
    after = task.model.weight.detach()
    assert _gap(after, codes) < 0.3 * _gap(table, codes)  # the class means moved together
    assert task.unlearning is None  # teardown hands the step back


class NotUnlearnable(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(2, 2)


def test_a_task_outside_the_contract_is_refused(tmp_path: Path) -> None:
    cloak = AttrCloak(mode="df")
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    with pytest.raises(TypeError, match="RepresentationTask"):
        cloak.setup(trainer, NotUnlearnable(), "fit")
    with pytest.raises(TypeError, match="RecommenderTask"):
        WarmStart().setup(trainer, TableTask(torch.zeros(3, 2)), "fit")


def test_recommender_task_implements_both_contract_classes() -> None:
    assert issubclass(RecommenderTask, RepresentationTask)
    assert issubclass(RepresentationTask, UnlearnableTask)
    with pytest.raises(TypeError, match="abstract"):
        UnlearnableTask()  # type: ignore[abstract]


def test_data_protocols_name_what_is_missing_without_loading() -> None:
    _, codes = _leaky_table()
    dm = AttributesOnly(codes)
    assert conforms(dm, AttributeData)
    assert not conforms(dm, InteractionData)
    assert missing_members(dm, ForgettingRequestData) == [
        "train_on",
        "forget_pairs",
        "remaining_pairs",
    ]
    with pytest.raises(TypeError, match=r"ForgettingRequestData.*lacks \['train_on'"):
        require_data(dm, ForgettingRequestData, "AltEraser")
    with pytest.raises(TypeError, match="got none"):
        require_data(None, AttributeData, "AttrCloak")

    class Exploding:
        mode = "data_free"

        @property
        def user_attributes(self) -> UserAttributes:
            raise RuntimeError("a check must not load the data")

    assert conforms(Exploding(), AttributeData)


def test_alteraser_refuses_a_datamodule_without_a_request(tmp_path: Path) -> None:
    from lit_unlearn.models import ENMF

    task = RecommenderTask(ENMF(num_users=4, num_items=5, embedding_dim=2), loss="nonsampling")
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    _, codes = _leaky_table()
    trainer.datamodule = AttributesOnly(codes)  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="ForgettingRequestData"):
        AltEraser().setup(trainer, task, "fit")
