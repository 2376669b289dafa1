"""A deterministic synthetic recommender dataset whose users' attributes leak into embeddings.

The embedded default for demos and fast tests: no files, no network, same tables for the same
seed on every machine. Each user carries three attributes (binary ``gender``, 7-group ``age``,
multi-class ``occupation``). A user's latent taste is the sum of one offset vector per attribute
class plus individual noise, and interactions are drawn from a softmax over taste . item factors.
Users who share an attribute value therefore share tastes, so a recommender trained on the
interactions learns embeddings from which an attacker can recover the attributes, which is what
attribute-inference attacks and attribute unlearning need to have something to show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import DataSource

#: Lower bounds of the seven MovieLens-1M age groups; users get an age inside their group.
_AGE_GROUP_BOUNDS: tuple[tuple[int, int], ...] = (
    (12, 17),
    (18, 24),
    (25, 34),
    (35, 44),
    (45, 49),
    (50, 55),
    (56, 70),
)
_OCCUPATIONS: tuple[str, ...] = ("artist", "engineer", "student", "educator", "healthcare")


class Synthetic(DataSource):
    """Deterministic synthetic interactions with planted, leaking user attributes.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        interactions_per_user: Mean number of interactions per user (each user gets between
            half and 1.5x of it, capped by ``num_items // 2``).
        latent_dim: Dimension of the planted taste space.
        attribute_signal: Norm of each attribute-class offset relative to the individual noise
            (1.0 = as strong as the noise). Larger means more leakage.
        temperature: Softmax temperature of item choice; lower is more taste-driven.
        popularity_exponent: None: item popularity logits are N(0, 0.5^2) (a mild spread, the
            default). A number ``a``: Zipf-like long tail, the item of popularity rank ``r``
            (ranks drawn at random) gets logit ``-a log r``, so with ``a ~ 1`` and many items
            most items are chosen by a handful of users, like real implicit-feedback data
            (music listening, product reviews).
        activity: How many interactions each user gets: ``uniform`` between half and 1.5x of
            ``interactions_per_user``; ``lognormal`` a long tail of heavy users (log-normal with
            sigma 1 and that mean), at least 2.
        seed: Generator seed; the same seed gives identical tables.
        root: Unused (no files); kept for the common source signature.
    """

    name = "synthetic"

    def __init__(
        self,
        num_users: int = 600,
        num_items: int = 400,
        interactions_per_user: int = 40,
        latent_dim: int = 16,
        attribute_signal: float = 1.0,
        temperature: float = 0.5,
        popularity_exponent: float | None = None,
        activity: Literal["uniform", "lognormal"] = "uniform",
        seed: int = 0,
        root: str = "data",
    ) -> None:
        super().__init__(root)
        if num_users < 10 or num_items < 10:
            raise ValueError(f"need at least 10 users and 10 items, got {num_users} x {num_items}")
        if not 2 <= interactions_per_user <= num_items // 2:
            raise ValueError(
                f"interactions_per_user must be in [2, num_items // 2 = {num_items // 2}], "
                f"got {interactions_per_user}"
            )
        if latent_dim < 1 or attribute_signal < 0 or temperature <= 0:
            raise ValueError("latent_dim >= 1, attribute_signal >= 0 and temperature > 0 required")
        self.num_users = num_users
        self.num_items = num_items
        self.interactions_per_user = interactions_per_user
        self.latent_dim = latent_dim
        self.attribute_signal = attribute_signal
        self.temperature = temperature
        if popularity_exponent is not None and not (
            np.isfinite(popularity_exponent) and popularity_exponent >= 0
        ):
            raise ValueError(
                f"popularity_exponent must be None or a finite float >= 0, "
                f"got {popularity_exponent}"
            )
        if activity not in ("uniform", "lognormal"):
            raise ValueError(f"activity must be 'uniform' or 'lognormal', got {activity!r}")
        self.popularity_exponent = popularity_exponent
        self.activity = activity
        self.seed = seed
        self._cache: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def user_files(self) -> list[Path]:
        return []

    def interaction_files(self) -> list[Path]:
        return []

    def load_users(self) -> pd.DataFrame:
        return self._generate()[1].copy()

    def load_interactions(self) -> pd.DataFrame:
        return self._generate()[0].copy()

    def _generate(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._cache is not None:
            return self._cache
        rng = np.random.default_rng(self.seed)
        n, m, d = self.num_users, self.num_items, self.latent_dim

        # Attributes: imbalanced like real data (ML-100K is 71% male).
        gender = rng.choice(2, size=n, p=[0.35, 0.65])
        age_group = rng.choice(7, size=n, p=[0.05, 0.2, 0.3, 0.2, 0.1, 0.1, 0.05])
        occupation = rng.choice(len(_OCCUPATIONS), size=n)

        # One offset direction per attribute class; taste = sum of offsets + noise.
        noise = rng.normal(size=(n, d))
        taste = noise.copy()
        for codes, k in ((gender, 2), (age_group, 7), (occupation, len(_OCCUPATIONS))):
            offsets = rng.normal(size=(k, d))
            offsets *= (
                self.attribute_signal * np.sqrt(d) / np.linalg.norm(offsets, axis=1, keepdims=True)
            )
            taste += offsets[codes] / np.sqrt(3.0)
        taste /= np.sqrt(d)
        items = rng.normal(size=(m, d))
        popularity = rng.normal(scale=0.5, size=m)
        if self.popularity_exponent is not None:
            # Drawn after the default popularity so the earlier draws stay those of the default.
            rank = rng.permutation(m) + 1
            popularity = -self.popularity_exponent * np.log(rank)

        mean = self.interactions_per_user
        cap = m // 2
        counts: np.ndarray | None = None
        if self.activity == "lognormal":
            # Drawn before the choices (a new mode: no earlier tables to keep), so that only as
            # many choices per user are ranked as the heaviest user needs.
            sigma = 1.0
            raw = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=n)
            counts = np.clip(np.round(raw), 2, cap).astype(np.int64)
            width = int(counts.max())
        else:
            width = min(cap, mean + mean // 2)
        # Gumbel top-k draws k items without replacement from softmax(logits), a block of users
        # at a time, ranking only the first ``width`` choices of each user: memory and time stay
        # O(block x items). The uniforms come in the same order as one [n, m] draw, so the
        # tables do not depend on the block size (nor differ from the earlier one-shot draw).
        block = max(1, 2_000_000 // m)
        order = np.empty((n, width), dtype=np.int64)
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            logits = (taste[lo:hi] @ items.T) / self.temperature + popularity
            gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=(hi - lo, m))))
            keys = -(logits + gumbel)
            top = np.argpartition(keys, width - 1, axis=1)[:, :width]
            ranked = np.take_along_axis(keys, top, axis=1).argsort(axis=1)
            order[lo:hi] = np.take_along_axis(top, ranked, axis=1)
        if counts is None:
            counts = rng.integers(max(2, mean // 2), width + 1, size=n)
        mask = np.arange(width)[None, :] < counts[:, None]
        users = np.repeat(np.arange(n), counts)
        chosen = order[mask]
        # Ratings: items the user likes most (earlier in the draw) get higher stars.
        position = np.nonzero(mask)[1]
        rel = position / np.maximum(counts[users] - 1, 1)
        rating = np.clip(np.round(5 - 4 * rel + rng.normal(scale=0.5, size=rel.size)), 1, 5)
        timestamp = 880_000_000 + rng.integers(0, 10_000_000, size=users.size)

        interactions = validate_interactions(
            pd.DataFrame(
                {
                    "user": (users + 1).astype(str),
                    "item": (chosen + 1).astype(str),
                    "rating": rating,
                    "timestamp": timestamp,
                }
            ),
            origin="synthetic",
        )
        low = np.array([b[0] for b in _AGE_GROUP_BOUNDS])[age_group]
        high = np.array([b[1] for b in _AGE_GROUP_BOUNDS])[age_group]
        age = rng.integers(low, high + 1)
        users_frame = validate_users(
            pd.DataFrame(
                {
                    "gender": np.where(gender == 1, "M", "F"),
                    "age": age,
                    "occupation": np.array(_OCCUPATIONS)[occupation],
                },
                index=(np.arange(n) + 1).astype(str),
            ),
            origin="synthetic",
        )
        self._cache = (interactions, users_frame)
        return self._cache
