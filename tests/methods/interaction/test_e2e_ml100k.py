"""End to end on real MovieLens-100K: AltEraser[AH-Newton] forgets injected noise like Retrain.

One repetition of the Table 3-5 experiment (noise scenario, seed 0, the documented stopping
rules): the original ENMF, Retrain, Retrain* and AltEraser[AH-Newton] from the original. Fails
if AltEraser stops forgetting (re-predict score on ``D_f`` stays near the original's), stops
emulating retraining (its top-10 lists drift from Retrain's towards the original's), hurts
ranking, or no longer converges within its pass budget. The thresholds are looser than the
issue's figures (those are 5-seed means; this is one seed), except RBO@10 against Retrain*'s.
The backbone is configs/model/enmf.yaml (dropout 0.7: Retrain* re-draws the masks).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.experiment import (
    instantiate_callbacks,
    load_experiment,
    run_once,
)
from tests.conftest import CONFIGS, ML100K, SHARED_DATASETS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ML100K.exists(), reason="ML-100K not found beside the repository"),
]


def test_ah_newton_forgets_injected_noise_like_retraining(tmp_path: Path) -> None:
    config = load_experiment(
        CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_table.yaml",
        scenario="noise",
        methods=["Retrain*", "AltEraser[AH-Newton]"],
        overrides=[f"--data.init_args.source.init_args.root={SHARED_DATASETS}"],
    )
    rows = {r["method"]: r for r in run_once(config, seed=0, workdir=tmp_path)}
    assert list(rows) == ["Original", "Retrain", "Retrain*", "AltEraser[AH-Newton]"]
    original, retrain, other, ah = (rows[m] for m in rows)
    # The original memorised the injected pairs; Retrain never saw them.
    assert original["repredict"] > 5 * retrain["repredict"]
    assert ah["repredict"] < 1.3 * retrain["repredict"]
    # Its lists are closer to Retrain's than another retraining's (the figure; by 0.044
    # on this seed, 0.021-0.078 over the 10 runs of the tables) and far from the original's.
    assert ah["rbo@10"] > other["rbo@10"]
    assert ah["rbo@10"] > original["rbo@10"] + 0.1
    assert abs(ah["recall@10"] - retrain["recall@10"]) < 0.02
    # The relative-decrease stop fired (speed itself is measured by the benchmark, not here).
    row = next(r for r in config.rows if r.name == "AltEraser[AH-Newton]")
    (eraser,) = instantiate_callbacks(config.callback_specs(row, None))
    assert isinstance(eraser, AltEraser) and ah["epochs"] < eraser.max_passes
