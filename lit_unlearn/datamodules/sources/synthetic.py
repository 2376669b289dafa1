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

        logits = (taste @ items.T) / self.temperature + popularity
        # Gumbel top-k draws k items without replacement from softmax(logits) for all users at once.
        gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=(n, m))))
        order = np.argsort(-(logits + gumbel), axis=1)
        mean = self.interactions_per_user
        counts = rng.integers(max(2, mean // 2), min(m // 2, mean + mean // 2) + 1, size=n)
        mask = np.arange(m)[None, :] < counts[:, None]
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
        lo = np.array([b[0] for b in _AGE_GROUP_BOUNDS])[age_group]
        hi = np.array([b[1] for b in _AGE_GROUP_BOUNDS])[age_group]
        age = rng.integers(lo, hi + 1)
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
