"""The recommender DataModule: any source -> preprocessing -> splits -> fast loaders.

Two modes (AttrCloak's data settings):

* ``data_dependent``: interactions are read, preprocessed and split; loaders give training pairs
  and evaluation batches for both ranking protocols.
* ``data_free``: only the trained model and user attributes exist. The user order the model was
  trained with comes from its checkpoint (this module's ``state_dict`` is saved there by
  Lightning) or from an index file, and nothing in this mode opens an interaction file. The
  training loader then yields batches of user ids for methods that work on embeddings alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lit_unlearn.datamodules.attributes import encode_attribute
from lit_unlearn.datamodules.containers import UserAttributes
from lit_unlearn.datamodules.index import UserIndex
from lit_unlearn.datamodules.loaders import (
    FullRankingLoader,
    ShardedIndexSampler,
    TensorBatchLoader,
    on_device,
)
from lit_unlearn.datamodules.preprocess import IndexedInteractions, balance_users, preprocess
from lit_unlearn.datamodules.sampling import (
    interaction_keys,
    sample_negatives,
)
from lit_unlearn.datamodules.sources.base import DataSource
from lit_unlearn.datamodules.sources.synthetic import Synthetic
from lit_unlearn.datamodules.splits import Split, leave_one_out, random_ratio, shadow_mask

Protocol = Literal["full", "sampled"]


class RecommendationData(pl.LightningDataModule):
    """Recommender data in data-dependent or data-free mode.

    Args:
        source: Where data comes from; default the deterministic :class:`Synthetic` set.
        mode: ``data_dependent`` or ``data_free`` (see module docstring).
        attributes: Sensitive attributes to encode (e.g. gender, age, occupation, continent,
            body_shape); unknown names fail with the list of available ones. An empty list
            encodes none (data-dependent mode only): then a source without a users file works
            and every interacting user is kept; with a users file, users without a profile row
            are still dropped.
        age_scheme: ``ml1m7`` (7 MovieLens-1M groups, AttrCloak) or ``fedau2`` (3 groups).
        age_bins: Cut points for ``fedau2`` (default the paper's ML-100K bins 27/38).
        rating_threshold: Keep ratings >= this as implicit positives; None keeps every event.
        user_k: k-core minimum interactions per user.
        item_k: k-core minimum interactions per item.
        balance: Attribute whose classes are down-sampled to equal size (FedAU2 balances gender).
        split: ``leave_one_out`` (latest interaction by time is the test item) or ``ratio``
            (random per-user split).
        validation: Leave-one-out: hold out the second-latest interaction for validation.
        train_ratio: Ratio split: training share per user.
        val_ratio: Ratio split: validation share per user.
        shadow_fraction: Share of users whose attributes the attacker knows (its training set).
        shadow_stratify: Attribute the shadow split is stratified on (default the first one).
        protocols: Ranking protocols evaluated: ``full`` (all unseen items) and/or ``sampled``
            (held-out item vs ``num_eval_negatives`` fixed negatives).
        num_eval_negatives: Negatives per held-out item in the sampled protocol.
        batch_size: Training batch size (interaction pairs; users in data-free mode).
        eval_batch_size: Users (full) or pairs (sampled) per evaluation batch.
        user_index: Data-free mode: checkpoint or JSON holding the trained model's user order.
        download: Allow downloading the official archive when files are missing.
        seed: Seed of splits, shadow set, evaluation negatives and shuffling.
        strict_users: Interactions of users missing from the users file are an error instead
            of being dropped with a warning (see ``docs/recommendation.md``, data contracts).
    """

    def __init__(
        self,
        source: DataSource | None = None,
        mode: Literal["data_dependent", "data_free"] = "data_dependent",
        attributes: list[str] | None = None,
        age_scheme: Literal["ml1m7", "fedau2"] = "ml1m7",
        age_bins: list[float] | None = None,
        rating_threshold: float | None = None,
        user_k: int = 1,
        item_k: int = 1,
        balance: str | None = None,
        split: Literal["leave_one_out", "ratio"] = "leave_one_out",
        validation: bool = True,
        train_ratio: float = 0.8,
        val_ratio: float = 0.0,
        shadow_fraction: float = 0.2,
        shadow_stratify: str | None = None,
        protocols: list[Protocol] | None = None,
        num_eval_negatives: int = 99,
        batch_size: int = 512,
        eval_batch_size: int = 256,
        user_index: str | None = None,
        download: bool = True,
        seed: int = 0,
        strict_users: bool = False,
    ) -> None:
        super().__init__()
        self.source = source if source is not None else Synthetic()
        self.mode = mode
        self.attribute_names = (
            list(attributes) if attributes is not None else ["gender", "age", "occupation"]
        )
        self.age_scheme = age_scheme
        self.age_bins = age_bins
        self.rating_threshold = rating_threshold
        self.user_k = user_k
        self.item_k = item_k
        self.balance = balance
        self.split_kind = split
        self.validation = validation
        self.train_ratio = train_ratio
        self.val_ratio = val_ratio
        self.shadow_fraction = shadow_fraction
        self.shadow_stratify = shadow_stratify
        self.protocols: list[Protocol] = (
            list(protocols) if protocols is not None else ["full", "sampled"]
        )
        self.num_eval_negatives = num_eval_negatives
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.user_index = user_index
        self.download = download
        self.seed = seed
        self.strict_users = strict_users
        self._check_args()
        self._index: UserIndex | None = None
        self._attributes: UserAttributes | None = None
        self._split: Split | None = None
        self._eval: dict[str, dict[str, Tensor]] = {}
        self._fingerprint: dict[str, dict[str, str]] | None = None

    def _check_args(self) -> None:
        if self.mode not in ("data_dependent", "data_free"):
            raise ValueError(f"mode must be 'data_dependent' or 'data_free', got {self.mode!r}")
        if self.mode == "data_free" and self.user_index is None:
            raise ValueError(
                "data_free mode needs user_index: the trained model's checkpoint (or a JSON index "
                "from RecommendationData.save_index) that fixes which row is which user"
            )
        if not self.attribute_names and self.mode == "data_free":
            raise ValueError(
                "data_free mode works on user attributes alone: attributes must name at least one"
            )
        if len(set(self.attribute_names)) != len(self.attribute_names):
            raise ValueError(f"attributes repeat a name: {self.attribute_names}")
        if self.shadow_stratify is not None and self.shadow_stratify not in self.attribute_names:
            raise ValueError(
                f"shadow_stratify {self.shadow_stratify!r} is not in attributes "
                f"{self.attribute_names}"
            )
        bad = [p for p in self.protocols if p not in ("full", "sampled")]
        if bad or not self.protocols:
            raise ValueError(
                f"protocols must be a non-empty subset of ['full', 'sampled'], got {self.protocols}"
            )
        for name in ("batch_size", "eval_batch_size", "num_eval_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.user_k < 1 or self.item_k < 1:
            raise ValueError(f"user_k and item_k must be >= 1, got {self.user_k}, {self.item_k}")

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        """Download/verify the source's files once per node (Lightning calls this on rank 0)."""
        self.source.prepare(download=self.download, need_interactions=self.mode == "data_dependent")

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def _load(self) -> None:
        if self._index is not None:
            return
        if self.mode == "data_free":
            self._load_data_free()
        else:
            self._load_data_dependent()

    def _load_data_dependent(self) -> None:
        self.source.prepare(download=self.download, need_interactions=True)
        interactions = self.source.load_interactions()
        profiles = self._profiles(self.source.load_users())
        data, users = preprocess(
            interactions,
            profiles,
            rating_threshold=self.rating_threshold,
            user_k=self.user_k,
            item_k=self.item_k,
            strict_users=self.strict_users,
        )
        if self.balance is not None:
            codes, _ = self._encode(users, self.balance)
            balanced = balance_users(users, codes, seed=self.seed)
            # Users left out by balancing are dropped on purpose: filter them here so the
            # second pass does not report them as missing from the users file.
            data, users = preprocess(
                interactions[interactions["user"].isin(balanced.index).to_numpy()],
                balanced,
                rating_threshold=self.rating_threshold,
                user_k=self.user_k,
                item_k=self.item_k,
                strict_users=self.strict_users,
            )
        self._index = UserIndex(user_ids=list(data.user_ids), item_ids=list(data.item_ids))
        self._attributes = self._encode_all(users)
        self._split = self._make_split(data)
        self._build_eval()

    def _load_data_free(self) -> None:
        assert self.user_index is not None
        index = UserIndex.load(self.user_index)
        self.source.prepare(download=self.download, need_interactions=False)
        users = self.source.load_users()
        if len(users) == 0:
            raise ValueError(
                f"data_free mode needs user attributes, but {self.source.name} has no users table "
                "(no users file)"
            )
        missing = [u for u in index.user_ids if u not in users.index]
        if missing:
            raise ValueError(
                f"{len(missing)} user(s) of the model's index have no profile in "
                f"{self.source.name}, "
                f"e.g. {missing[:5]}"
            )
        self._index = index
        self._attributes = self._encode_all(users.loc[index.user_ids])

    def _profiles(self, users: pd.DataFrame) -> pd.DataFrame | None:
        """The users table for preprocessing; None (keep every user) when the source has none.

        Raises:
            ValueError: No users table although attributes (or balancing) need one.
        """
        if len(users) > 0:
            return users
        needed = [*self.attribute_names, *([self.balance] if self.balance is not None else [])]
        if needed:
            what = f"attributes {self.attribute_names}" if self.attribute_names else ""
            if self.balance is not None:
                what += f"{' and ' if what else ''}balance={self.balance!r}"
            raise ValueError(
                f"{what} need a users table, but {self.source.name} has none (no users file); "
                "give the source a users file, or set attributes: [] (and no balance) for "
                "interaction-only data"
            )
        return None

    def _encode(self, users: pd.DataFrame, name: str) -> tuple[np.ndarray, list[str]]:
        return encode_attribute(users, name, age_scheme=self.age_scheme, age_bins=self.age_bins)

    def _encode_all(self, users: pd.DataFrame) -> UserAttributes:
        codes: dict[str, Tensor] = {}
        classes: dict[str, list[str]] = {}
        for name in self.attribute_names:
            c, names = self._encode(users, name)
            codes[name] = torch.as_tensor(c, dtype=torch.long)
            classes[name] = list(names)
        stratify = self.shadow_stratify or next(iter(self.attribute_names), None)
        shadow = shadow_mask(
            codes[stratify].numpy() if stratify is not None else None,
            num_users=len(users),
            fraction=self.shadow_fraction,
            seed=self.seed,
        )
        return UserAttributes(
            codes=codes, classes=classes, shadow=torch.as_tensor(shadow, dtype=torch.bool)
        )

    def _make_split(self, data: IndexedInteractions) -> Split:
        if self.split_kind == "leave_one_out":
            return leave_one_out(data, validation=self.validation)
        if self.split_kind == "ratio":
            return random_ratio(data, train=self.train_ratio, val=self.val_ratio, seed=self.seed)
        raise ValueError(f"split must be 'leave_one_out' or 'ratio', got {self.split_kind!r}")

    def _build_eval(self) -> None:
        """Per-stage evaluation tensors, built once so every epoch and rank sees the same ones."""
        split = self.split
        n_items = self.num_items
        train = torch.as_tensor(split.train)
        val = torch.as_tensor(split.val).reshape(-1, 2)
        test = torch.as_tensor(split.test).reshape(-1, 2)
        everything = torch.cat([train, val, test])
        seen_all = interaction_keys(everything[:, 0], everything[:, 1], n_items)
        exclude = {
            "val": interaction_keys(train[:, 0], train[:, 1], n_items),
            "test": interaction_keys(
                torch.cat([train, val])[:, 0], torch.cat([train, val])[:, 1], n_items
            ),
        }
        self._eval = {}
        for offset, (stage, pairs) in enumerate((("val", val), ("test", test))):
            if len(pairs) == 0:
                continue
            # Only the sampled protocol needs negatives (small catalogues may not have 99).
            negatives = (
                sample_negatives(
                    pairs[:, 0],
                    seen_all,
                    n_items,
                    num_negatives=self.num_eval_negatives,
                    seed=self.seed + offset,
                )
                if "sampled" in self.protocols
                else torch.empty(len(pairs), 0, dtype=torch.long)
            )
            self._eval[stage] = {
                "pairs": pairs,
                "negatives": negatives,
                "exclude_keys": exclude[stage],
                "target_keys": interaction_keys(pairs[:, 0], pairs[:, 1], n_items),
                "users": torch.unique(pairs[:, 0]),
            }

    # ------------------------------------------------------------------ properties
    @property
    def index(self) -> UserIndex:
        self._load()
        assert self._index is not None
        return self._index

    @property
    def num_users(self) -> int:
        """Users (rows of the user embedding table); loads the data on first access."""
        return len(self.index.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.index.item_ids)

    @property
    def user_attributes(self) -> UserAttributes:
        self._load()
        assert self._attributes is not None
        return self._attributes

    @property
    def split(self) -> Split:
        """Train/val/test pairs (data-dependent mode only)."""
        self._load()
        if self._split is None:
            raise RuntimeError("data_free mode has no interactions and so no split")
        return self._split

    @property
    def train_graph(self) -> Tensor:
        """Training (user, item) pairs as a LongTensor [2, E] for graph backbones."""
        return torch.as_tensor(self.split.train).t().contiguous()

    def save_index(self, path: str | Path) -> None:
        """Write the user/item order as JSON for a later data-free run."""
        self.index.save(path)

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def shuffle_seed(self) -> int:
        """Seed of the training order (subclasses may decouple it from the split's seed)."""
        return self.seed

    def train_dataloader(self) -> TensorBatchLoader:
        rank, world = self._rank_world()
        if self.mode == "data_free":
            columns = {"user": torch.arange(self.num_users)}
        else:
            train = torch.as_tensor(self.split.train)
            columns = {"user": train[:, 0].contiguous(), "item": train[:, 1].contiguous()}
        n = int(next(iter(columns.values())).shape[0])
        sampler = ShardedIndexSampler(
            n,
            self.batch_size,
            shuffle=True,
            seed=self.shuffle_seed(),
            rank=rank,
            world_size=world,
            even_shards=True,
        )
        return TensorBatchLoader(columns, sampler, device=self._device())

    def _eval_loaders(self, stage: str) -> list[Any]:
        if self.mode == "data_free" or stage not in self._eval_stages():
            return []
        data = self._eval[stage]
        rank, world = self._rank_world()
        loaders: list[Any] = []
        for protocol in self.protocols:
            if protocol == "full":
                users = data["users"]
                sampler = ShardedIndexSampler(
                    len(users), self.eval_batch_size, rank=rank, world_size=world, even_shards=False
                )
                loaders.append(
                    FullRankingLoader(
                        TensorBatchLoader({"user": users}, sampler, device="cpu"),
                        data["exclude_keys"],
                        data["target_keys"],
                        self.num_items,
                        self._device(),
                    )
                )
            else:
                pairs = data["pairs"]
                sampler = ShardedIndexSampler(
                    len(pairs), self.eval_batch_size, rank=rank, world_size=world, even_shards=False
                )
                columns = {"user": pairs[:, 0], "item": pairs[:, 1], "negatives": data["negatives"]}
                loaders.append(TensorBatchLoader(columns, sampler, device=self._device()))
        return loaders

    def _eval_stages(self) -> dict[str, dict[str, Tensor]]:
        self._load()
        return self._eval

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if on_device(batch, device):  # gathered on the training device by our loaders
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def val_dataloader(self) -> list[Any]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[Any]:
        return self._eval_loaders("test")

    def eval_protocols(self, stage: str) -> list[Protocol]:
        """Protocol of each evaluation dataloader of ``stage``, by dataloader index."""
        return (
            list(self.protocols)
            if stage in self._eval_stages() and self.mode == "data_dependent"
            else []
        )

    # ------------------------------------------------------------------ checkpoint state
    def fingerprint(self) -> dict[str, dict[str, str]]:
        """What a checkpoint trained on this data records of it (:mod:`lit_unlearn.fingerprint`).

        ``content``: digests of the user and item ids, of each encoded attribute and, in
        data-dependent mode, of the interactions of every split. ``config``: the source and the
        filter and split settings, shown when content differs. Computed once (the data is
        immutable after loading).
        """
        if self._fingerprint is None:
            from lit_unlearn.fingerprint import describe_object, digest

            index = self.index
            attrs = self.user_attributes
            content = {
                "user ids": f"{len(index.user_ids)} users, sha256 {digest(index.user_ids)}",
                "item ids": f"{len(index.item_ids)} items, sha256 {digest(index.item_ids)}",
            }
            for name, codes in attrs.codes.items():
                content[f"attribute {name}"] = (
                    f"{attrs.num_classes(name)} classes, sha256 "
                    f"{digest(codes, attrs.classes[name])}"
                )
            config = {"source": describe_object(self.source)}
            if self.mode == "data_dependent":
                train, val, test = self._trained_pairs()
                content["interactions"] = (
                    f"train {len(train)}, val {len(val)}, test {len(test)}, sha256 "
                    f"{digest(train, val, test)}"
                )
                config["filters"] = (
                    f"rating_threshold={self.rating_threshold}, user_k={self.user_k}, "
                    f"item_k={self.item_k}, balance={self.balance}"
                )
                config["split"] = (
                    f"{self.split_kind}, validation={self.validation}, train_ratio="
                    f"{self.train_ratio}, val_ratio={self.val_ratio}, seed={self.seed}"
                )
            self._fingerprint = {"content": content, "config": config}
        return self._fingerprint

    def _trained_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The train/val/test pairs a model of this data is trained and evaluated on."""
        split = self.split
        return np.asarray(split.train), np.asarray(split.val), np.asarray(split.test)

    def state_dict(self) -> dict[str, Any]:
        """The user/item order, so data-free runs can align attributes with the model."""
        index = self.index
        return {"user_ids": index.user_ids, "item_ids": index.item_ids}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        stored = UserIndex(list(state_dict["user_ids"]), list(state_dict["item_ids"]))
        if self._index is not None and stored != self._index:
            raise ValueError(
                "the checkpoint was trained with a different user/item order than this data "
                "produces (different preprocessing, seed or files)"
            )
