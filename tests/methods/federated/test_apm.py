"""APM (FedAU2's LDP baseline): the clip-and-Laplace perturbation of each client's round."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor

from lit_unlearn.methods.federated import (
    APMPerturbation,
    ClientData,
    ClientUpdate,
    FedAvg,
    InProcessEngine,
    PointwiseBCE,
)
from lit_unlearn.methods.federated.apm import laplace_epsilon, laplace_noise
from lit_unlearn.methods.federated.engine import ClientTransform
from lit_unlearn.models import NCF

CONFIG = Path(__file__).resolve().parents[3] / "configs/method/federated/apm.yaml"
USER = "model.user_embedding.weight"
ITEM = "model.item_embedding.weight"


def _pairs(num_users: int = 12, num_items: int = 15, per_user: int = 4) -> Tensor:
    g = torch.Generator().manual_seed(0)
    rows = []
    for u in range(num_users):
        n = per_user + u % 3
        items = torch.randperm(num_items, generator=g)[:n]
        rows.append(torch.stack([torch.full((n,), u), items]))
    return torch.cat(rows, dim=1)


def _model() -> NCF:
    torch.manual_seed(0)
    return NCF(12, 15, 8, hidden_layers=1, scorer="neumf")


def _engine(model: NCF, transforms: list[ClientTransform] | None = None) -> InProcessEngine:
    data = ClientData.from_pairs(_pairs(), 12, 15)
    return InProcessEngine(
        model, PointwiseBCE(2), data, fraction=0.5, local_batch_size=4, lr=0.05,
        transforms=transforms, seed=1,
    )  # fmt: skip


def _update(num: int = 3, rows: int = 200, dim: int = 50) -> ClientUpdate:
    """A synthetic round: zero uploads (the noise alone shows) and zero private rows."""
    return ClientUpdate(
        round_index=0,
        clients=torch.arange(num),
        start={ITEM: torch.zeros(rows, dim), "model.predict.bias": torch.zeros(1)},
        deltas={ITEM: torch.zeros(num, rows, dim), "model.predict.bias": torch.zeros(num, 1)},
        lr={ITEM: 0.1, "model.predict.bias": 0.1},
        optimizer={ITEM: "sgd", "model.predict.bias": "sgd"},
        private={USER: torch.zeros(num, 1, dim)},
    )


def _gens(users: list[int], seed: int = 7) -> list[torch.Generator]:
    return [InProcessEngine.client_generator(seed, u) for u in users]


# ------------------------------------------------------------------ the distribution
def test_noise_is_laplace_with_the_documented_scale() -> None:
    b = 0.3
    x = laplace_noise((400_000,), b, torch.Generator().manual_seed(0), torch.float64)
    assert abs(float(x.mean())) < 0.005
    # Laplace(0, b): E|X| = b, Var = 2 b^2, excess kurtosis 3 (a Gaussian's is 0)
    assert float(x.abs().mean()) == pytest.approx(b, rel=0.01)
    assert float(x.std()) == pytest.approx(math.sqrt(2) * b, rel=0.01)
    kurtosis = float(((x - x.mean()) ** 4).mean() / x.var() ** 2) - 3
    assert kurtosis == pytest.approx(3.0, abs=0.3)


def test_uploads_and_private_rows_get_the_per_component_scale() -> None:
    apm = APMPerturbation(noise=0.02, clip=0.1, vulnerability={USER: 3.0, "*.bias": 0.0})
    update = _update()
    out = apm(update, _gens([0, 1, 2]))
    item_noise = out.deltas[ITEM]  # the uploads were zero: this is the noise
    assert float(item_noise.abs().mean()) == pytest.approx(0.02, rel=0.03)
    assert float(item_noise.std()) == pytest.approx(math.sqrt(2) * 0.02, rel=0.03)
    user_noise = out.private[USER]  # weight 3: three times the scale
    assert float(user_noise.abs().mean()) == pytest.approx(0.06, rel=0.15)
    # weight 0: the component is left exactly as it was (not clipped, no noise)
    assert out.deltas["model.predict.bias"] is update.deltas["model.predict.bias"]
    # the input is not modified
    assert torch.equal(update.deltas[ITEM], torch.zeros_like(update.deltas[ITEM]))


def test_uploads_are_clipped_per_coordinate_before_the_noise() -> None:
    update = _update(num=2, rows=4, dim=3)
    big = torch.tensor([-5.0, -0.05, 0.0, 0.05, 5.0, 1.0]).repeat(4).view(2, 4, 3)
    update = dataclasses.replace(update, deltas={**update.deltas, ITEM: big})
    clipped = APMPerturbation(noise=0.0, clip=0.1)(update, _gens([0, 1]))
    torch.testing.assert_close(clipped.deltas[ITEM], big.clamp(-0.1, 0.1))
    # private rows are not clipped unless private_bound is set; then they are
    rows = torch.full((2, 1, 3), 2.0)
    update = dataclasses.replace(update, private={USER: rows})
    assert torch.equal(APMPerturbation(0.0, clip=0.1)(update, _gens([0, 1])).private[USER], rows)
    bounded = APMPerturbation(0.0, clip=0.1, private_bound=0.5)(update, _gens([0, 1]))
    torch.testing.assert_close(bounded.private[USER], torch.full((2, 1, 3), 0.5))


def test_zero_noise_and_no_clipping_is_the_identity() -> None:
    apm = APMPerturbation(noise=0.0, clip=None)
    update = _update()
    assert apm.is_identity
    assert apm(update, _gens([0, 1, 2])) is update
    # end to end: the same model as without any transform
    plain, with_apm = _model(), _model()
    e1, e2 = _engine(plain), _engine(with_apm, [apm])
    for _ in range(3):
        e1.run_round()
        e2.run_round()
    for a, b in zip(plain.parameters(), with_apm.parameters(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ independence
def test_a_clients_noise_does_not_depend_on_the_other_clients() -> None:
    apm = APMPerturbation(noise=0.05, clip=0.1)
    together = apm(_update(num=3), _gens([2, 5, 9]))
    alone = apm(_update(num=1), _gens([5]))
    for name in together.deltas:
        assert torch.equal(alone.deltas[name][0], together.deltas[name][1])
    assert torch.equal(alone.private[USER][0], together.private[USER][1])
    # distinct clients draw distinct noise
    assert not torch.equal(together.deltas[ITEM][0], together.deltas[ITEM][1])


def test_engine_applies_it_client_by_client() -> None:
    apm = APMPerturbation(noise=0.05, clip=0.1)
    engine = _engine(_model(), [apm])
    together, _ = engine.local_updates(torch.tensor([1, 4, 7]), round_seed=11)
    alone, _ = engine.local_updates(torch.tensor([4]), round_seed=11)
    for n, d in alone.deltas.items():
        torch.testing.assert_close(d[0], together.deltas[n][1], atol=1e-6, rtol=1e-5)
    for n, p in alone.private.items():
        torch.testing.assert_close(p[0], together.private[n][1], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ end to end
def test_round_uploads_and_keeps_the_perturbed_state() -> None:
    apm = APMPerturbation(noise=0.05, clip=0.02)
    model, reference = _model(), _model()
    engine, plain = _engine(model, [apm]), _engine(reference)
    seen: list[ClientUpdate] = []
    engine.upload_hooks.append(seen.append)
    raw: list[ClientUpdate] = []
    plain.upload_hooks.append(raw.append)
    engine.run_round()
    plain.run_round()
    (update,), (clean,) = seen, raw
    assert torch.equal(update.clients, clean.clients)
    noises = []
    for n, d in update.deltas.items():
        noise = d - clean.deltas[n].clamp(-0.02, 0.02)
        assert float(noise.abs().min()) > 0  # every coordinate, touched or not
        noises.append(noise.flatten())
    # E|Laplace(0, b)| = b, over every uploaded coordinate (a per-parameter mean of a bias's
    # few values is too noisy to test)
    assert float(torch.cat(noises).abs().mean()) == pytest.approx(0.05, rel=0.1)
    # the server aggregated the perturbed uploads
    counts = engine.data.counts[update.clients]
    expected = FedAvg()(update.start, update.deltas, counts)
    for n in engine.shared_names:
        torch.testing.assert_close(engine._params[n].detach(), expected[n])
    # the clients keep their perturbed private rows
    for n in engine.private_names:
        stored = engine._params[n].detach()[update.clients]
        torch.testing.assert_close(stored, update.private[n][:, 0])
        assert not torch.allclose(stored, clean.private[n][:, 0])
    # deterministic: the same seed gives the same model
    again = _model()
    e3 = _engine(again, [APMPerturbation(noise=0.05, clip=0.02)])
    e3.run_round()
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ accounting
def test_privacy_accounting() -> None:
    assert laplace_epsilon(0.1, 0.01) == pytest.approx(20.0)
    assert laplace_epsilon(0.1, 0.02, coordinates=10, releases=3) == pytest.approx(300.0)
    assert laplace_epsilon(None, 0.01) == math.inf
    assert laplace_epsilon(0.1, 0.0) == math.inf
    assert laplace_epsilon(0.1, 0.01, coordinates=0) == 0.0
    budget = APMPerturbation(noise=0.01, clip=0.1, vulnerability={USER: 2.0}).budget(_update())
    assert budget[ITEM].site == "upload" and budget[ITEM].coordinates == 200 * 50
    assert budget[ITEM].epsilon_coordinate == pytest.approx(20.0)
    assert budget[ITEM].epsilon_round == pytest.approx(20.0 * 200 * 50)
    assert budget[USER].site == "private" and budget[USER].scale == pytest.approx(0.02)
    assert budget[USER].epsilon_coordinate == math.inf  # no private_bound: no guarantee
    bounded = APMPerturbation(noise=0.01, clip=0.1, private_bound=0.5).budget(_update())
    assert bounded[USER].epsilon_coordinate == pytest.approx(100.0)
    with pytest.raises(ValueError, match="scale"):
        laplace_epsilon(0.1, -1.0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"noise": float("inf")}, "noise"),
        ({"noise": True}, "noise"),
        ({"clip": 0.0}, "clip"),
        ({"clip": -1.0}, "clip"),
        ({"clip": float("inf")}, "clip"),
        ({"private_bound": 0.0}, "private_bound"),
        ({"vulnerability": {USER: -1.0}}, "vulnerability"),
        ({"vulnerability": {USER: float("nan")}}, "vulnerability"),
        ({"vulnerability": {"": 1.0}}, "vulnerability"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        APMPerturbation(**kwargs)  # type: ignore[arg-type]


def test_bad_updates_are_refused() -> None:
    with pytest.raises(ValueError, match="generator"):
        APMPerturbation()(_update(num=3), _gens([0, 1]))
    with pytest.raises(ValueError, match="matches no parameter"):
        APMPerturbation(vulnerability={"model.user_embeding.*": 2.0})(_update(), _gens([0, 1, 2]))


# ------------------------------------------------------------------ the CLI schema
def test_config_snippet_builds_the_transform() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    snippet = yaml.safe_load(CONFIG.read_text())
    (spec,) = snippet["model"]["init_args"]["transforms"]
    assert spec["class_path"] == "lit_unlearn.methods.federated.apm.APMPerturbation"
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--transforms", type=list[ClientTransform])
    cfg = parser.parse_object({"transforms": [spec]})
    (apm,) = parser.instantiate_classes(cfg).transforms
    assert isinstance(apm, APMPerturbation)
    assert apm.noise == pytest.approx(0.01) and apm.clip == pytest.approx(0.1)
