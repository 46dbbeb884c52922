# The project's commands. `make serve` and `make test` are the two README commands.
PY := .venv/bin/python

.PHONY: setup setup-dev models serve test test-unit lint bench clean

setup:
	./setup.sh

setup-dev:
	./setup.sh --dev

# Demo data -> tiny UIE and SPO models -> the conversion bridge -> serving_model/ (idempotent).
models:
	$(PY) -m conversion.bridge build

serve: setup models
	$(PY) web_service.py --config config.yml

test: setup-dev models
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
	rm -rf build serving_model/uie serving_model/spo serving_model/parity.json PipelineServingLogs ProcessSteps
