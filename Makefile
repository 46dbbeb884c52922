# The project's commands. `make serve` and `make test` are the two README commands.
PY := .venv/bin/python

.PHONY: setup setup-dev models models-seed1 serve test test-unit lint bench clean

setup:
	./setup.sh

setup-dev:
	./setup.sh --dev

# Demo data -> tiny UIE and SPO models -> the conversion bridge -> serving_model/ (idempotent).
models:
	$(PY) -m conversion.bridge build

# A second demo UIE (same data and encoder start, training seed 1) beside the first, for the
# many-models tests (tests/service/test_many_models.py): about 2 minutes on 2 cores, once.
# Training runs a fixed number of steps, so each demo model is a function of its seed.
SEED1 := serving_model/seed1/uie/model_card.json
models-seed1:
	test -f $(SEED1) || { $(PY) -m conversion.train_uie --data build/demo/data --out build/demo_seed1/uie_ckpt \
	    --seed 1 --init-encoder build/demo/spo_ckpt --threads 2 && \
	  $(PY) -m conversion.bridge build --only uie --uie-checkpoint build/demo_seed1/uie_ckpt \
	    --out serving_model/seed1 --work build/demo_seed1 --no-int8; }

serve: setup models
	$(PY) web_service.py --config config.yml

test: setup-dev models models-seed1
	$(PY) -m pytest -q

# The tests that need no demo models and no live server (about 30 s once set up).
test-unit: setup-dev
	$(PY) -m pytest -q -m "not slow"

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# The benchmark (README "Benchmark"): installs requirements-bench.txt into build/bench/pylib, builds
# the nano/base models, measures. `make bench BENCH_ARGS=--quick` runs the < 1 minute demo subset.
BENCH_ARGS ?=
bench: setup models
	$(PY) -m client.bench --setup --out bench_out $(BENCH_ARGS)

clean:
	rm -rf build serving_model/uie serving_model/spo serving_model/seed1 serving_model/parity.json PipelineServingLogs ProcessSteps
