# Two commands on a fresh machine: `make demo` (main job, synthetic default, offline) and
# `make test` (the test suite). Each bootstraps .venv with torch pinned to 2.13.0.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= xgboost-cpu,wandb,parquet,plots,mnist,images,flower,dev
PYTEST_ARGS ?=

export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0

.PHONY: venv demo test test-fast lint typecheck bench attrcloak-table attrcloak-leakage-table attrcloak-leakage-reaudit alteraser-table alteraser-sparse-tables class-unlearning-tables fedau2-table1 fedau2-fig3 fedau2-fig4 fedau2-overhead federated-flower clean

$(BIN)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/lit-unlearn fit --config configs/experiment/demo.yaml --trainer.enable_progress_bar=false
	$(BIN)/lit-unlearn test --config configs/experiment/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt --trainer.enable_progress_bar=false
	$(BIN)/lit-unlearn audit --config configs/experiment/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt --trainer.enable_progress_bar=false --trainer.logger=false --output_dir runs/demo/audit
	$(BIN)/lit-unlearn fit --config configs/experiment/class_unlearning/digits_cnn.yaml --trainer.enable_progress_bar=false
	$(BIN)/lit-unlearn audit --config configs/experiment/class_unlearning/digits_cnn.yaml --ckpt_path runs/digits_cnn/checkpoints/last.ckpt --data.init_args.forget_classes=[3] --trainer.enable_progress_bar=false --trainer.logger=false --output_dir runs/digits_cnn/audit_forget3

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not ddp" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy lit_unlearn tests benchmarks

bench: venv
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/attrcloak_step.py
	$(BIN)/python benchmarks/classifier_throughput.py

# AttrCloak comparison on ML-100K. The NCF model is always trained first (deterministic, ~40 s on
# 2 cores): reusing whatever runs/ml100k_ncf held once made a committed table come from a model
# the code no longer trains. Rows, seeds and the output dir: the table YAML.
attrcloak-table: venv
	$(BIN)/lit-unlearn fit --config configs/experiment/ml100k_ncf.yaml --trainer.enable_progress_bar=false
	$(BIN)/python -m lit_unlearn.methods.attribute.experiment \
		--config configs/experiment/attribute/attrcloak_ml100k_table.yaml

# MKL_CBWR=COMPATIBLE: one MKL code path on every x86 CPU, so another machine trains the same
# Original (docs/attrcloak.md, "Reproducibility across machines"); about 2x slower GEMMs.
attrcloak-leakage-table: venv
	MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 $(BIN)/lit-unlearn fit --config configs/experiment/ml100k_ncf.yaml --trainer.enable_progress_bar=false
	MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 $(BIN)/python -m lit_unlearn.methods.attribute.experiment \
		--config configs/experiment/attribute/attrcloak_ml100k_leakage_table.yaml

# The same table's exports re-audited by the second-order attacker (logistic regression on
# [x, x^2]: class spreads, docs/attrcloak.md "Second moments invert too"; ~30 min, 1 thread).
attrcloak-leakage-reaudit: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m lit_unlearn.methods.attribute.experiment.reaudit \
		--table benchmarks/results/attrcloak_ml100k_leakage --attackers quadratic --stem reaudit_quadratic

# FedAU2 (docs/fedau2.md) on ML-100K: Table 1 (~1 h 45 min per seed on 2 cores), Fig. 3 and
# Fig. 4; each resumes after a kill (rows.jsonl) and renders Markdown / CSV / PNG.
FEDAU2 := OMP_NUM_THREADS=1 $(BIN)/python -m lit_unlearn.methods.federated.experiment --config configs/experiment/federated
fedau2-table1: venv
	$(FEDAU2)/fedau2_ml100k_table1.yaml
fedau2-fig3: venv
	$(FEDAU2)/fedau2_ml100k_fig3.yaml
fedau2-fig4: venv
	$(FEDAU2)/fedau2_ml100k_fig4.yaml
# FedAU2 Table 3: per-step client overhead against the plain client step (same run)
fedau2-overhead: venv
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/fedau2_overhead.py

# The Flower engine on a real local deployment (a SuperLink and one SuperNode per user on
# 127.0.0.1) against the in-process engine: equal results, the per-round cost (~2 min).
federated-flower: venv
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/federated_flower.py

# AltEraser Tables 3-5 on ML-100K, both scenarios, 5 repetitions each (~20 minutes on 2 cores);
# every row and hyperparameter is in the experiment YAML and the method configs it names.
# Checkpoints stay in runs/, the reports are copied to benchmarks/results/
ALTERASER_TABLE := configs/experiment/interaction/alteraser_ml100k_table.yaml
alteraser-table: venv
	for scenario in noise privacy; do \
		$(BIN)/python -m lit_unlearn.methods.interaction.experiment --config $(ALTERASER_TABLE) \
			--scenario $$scenario --repeats 5 --out runs/alteraser_ml100k_$$scenario || exit 1; \
		mkdir -p benchmarks/results/alteraser_ml100k_$$scenario; \
		cp runs/alteraser_ml100k_$$scenario/*.md runs/alteraser_ml100k_$$scenario/*.csv \
			runs/alteraser_ml100k_$$scenario/*.json benchmarks/results/alteraser_ml100k_$$scenario/ \
			|| exit 1; \
	done

# AltEraser on sparse, long-tail data (issue 24): the music-like and the 5-core synthetic sets,
# both scenarios, 5 repetitions each (~25 minutes on 2 cores). A killed run resumes from its
# rows.jsonl when started again.
alteraser-sparse-tables: venv
	for name in longtail longtail_5core; do for scenario in noise privacy; do \
		$(BIN)/python -m lit_unlearn.methods.interaction.experiment \
			--config configs/experiment/interaction/alteraser_$${name}_table.yaml \
			--scenario $$scenario --repeats 5 --out runs/alteraser_$${name}_$$scenario || exit 1; \
		mkdir -p benchmarks/results/alteraser_$${name}_$$scenario; \
		cp runs/alteraser_$${name}_$$scenario/*.md runs/alteraser_$${name}_$$scenario/*.csv \
			runs/alteraser_$${name}_$$scenario/*.json \
			benchmarks/results/alteraser_$${name}_$$scenario/ || exit 1; \
	done; done

clean:
	rm -rf runs lightning_logs .pytest_cache .mypy_cache .ruff_cache

# Class unlearning on the two bundled real sets (CPU, offline): Original / Retrain / Fine-tune,
# 3 seeds x forget classes 0, 3, 7 (digits ~3 min, MNIST-5k ~15 min on 2 cores). Reports are
# copied to benchmarks/results/class_unlearning_{digits,mnist5k}/.
class-unlearning-tables: venv
	for set in digits mnist5k; do \
		$(BIN)/python -m lit_unlearn.methods.class_unlearning.experiment \
			--config configs/experiment/class_unlearning/$${set}_table.yaml || exit 1; \
		mkdir -p benchmarks/results/class_unlearning_$$set; \
		cp runs/class_unlearning_$$set/report.md runs/class_unlearning_$$set/results.csv \
			runs/class_unlearning_$$set/summary.csv runs/class_unlearning_$$set/*.png \
			benchmarks/results/class_unlearning_$$set/; \
	done
