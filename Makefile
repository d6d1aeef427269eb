# fraud-scoring: the two commands a newcomer needs are `make run` and `make test`.
# Everything installs into .venv (created on first use); the Kafka broker comes from
# scripts/local-kafka (Apache Kafka from Maven Central on Java 17).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
LINT_STAMP := $(VENV)/.lint-installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: help install test test-unit lint soak fuzz run bench retrain clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 14

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[training,test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)  ## create .venv and install the package with the training and test extras

# The lint extra on top of the main install (mypy checks against the training and test dependencies too).
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	@rm -f $(VENV)/.lint-installed-*
	@touch $@

# The suite mostly waits (broker outages, session timeouts, killed processes), so pytest-xdist runs it on
# TEST_WORKERS processes sharing one broker (tests/conftest.py); each file stays on one worker, the files
# in collection order (the integration files, the slow ones, first). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: $(STAMP)  ## run every test, the integration tests against a real Kafka broker
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: $(STAMP)  ## run the tests that need no broker
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: $(LINT_STAMP)  ## ruff check and mypy (the lint extra, installed on first use)
	$(PY) -m ruff check .
	$(PY) -m mypy

soak: $(STAMP)  ## 10 minutes at 500 events/s: flat memory and file descriptors, every event reconciled
	$(PY) -m pytest -m soak -s tests/integration/test_soak.py $(PYTEST_ARGS)

# The fuzz campaign (fuzz/): each reader of outside data (event decoder, label and score records, manifest
# and signature, pointer files, fraud-train's CSV, backtest, fraud-replay's CSV, the health server's requests,
# tail-alerts, the settings parsers) fed generated bad input, derandomized; a short run is in `make test`.
# FUZZ_ARGS: --random-seed, --seed N, --only decode,records, --scale 0.1, --no-memory.
FUZZ_ARGS ?=
fuzz: $(STAMP)  ## fuzz every reader of outside data (about 5 minutes): inputs and failures per target, exit 1 on any
	$(PY) -m fuzz $(FUZZ_ARGS)

bench: $(STAMP)  ## throughput against a bare consumer, latency, memory: prints a table, writes benchmarks/results.json
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Ctrl-C ends `make run` (also `make run | tee run.log`) with status 0 and nothing left running. GNU make
# re-raises a SIGINT it receives once its child has returned (status 130 however cleanly the child
# stopped), so at a terminal scripts/run-local takes the Ctrl-C for itself (scripts/foreground.py).
run: $(STAMP)  ## the main job: local Kafka, a model, the worker, a stream of transactions, alerts; Ctrl-C stops it
	scripts/run-local

# The retraining job: the labelled traffic of the last RETRAIN_DAYS from fraud-feedback's stores, a
# model trained on it with the newest rows as the test set, and the promotion gate comparing it with
# CURRENT on those same rows; a worker hot-reloads a promoted model. (deploy/k8s/retrain-cronjob.yaml)
# make run's fraud-feedback keeps its stores here
FEEDBACK_STATE_DIR ?= runs/feedback-state
MODELS_DIR ?= models
RETRAIN_DAYS ?= 30
RETRAIN_DATA ?= runs/retrain-examples.csv.gz
RETRAIN_ARGS ?=
# Where the examples come from: the stores, opened read-only, or RETRAIN_FROM=--from-topics (the scores
# and labels topics alone, as the CronJob reads them; FRAUD_BOOTSTRAP_SERVERS and FRAUD_KAFKA_* apply)
RETRAIN_FROM ?= --state-dir $(FEEDBACK_STATE_DIR)
retrain: $(STAMP)  ## export the last RETRAIN_DAYS (30) of labelled traffic, train on it (--split time), promote if not worse
	$(VENV)/bin/fraud-feedback export $(RETRAIN_FROM) --since $(RETRAIN_DAYS)d --out $(RETRAIN_DATA)
	$(VENV)/bin/fraud-train --data $(RETRAIN_DATA) --label-column is_fraud --split time --models-dir $(MODELS_DIR) \
	  --feature-spec current $(RETRAIN_ARGS)

clean:  ## remove the virtualenv, broker state and caches (keeps models/)
	-scripts/local-kafka stop
	rm -rf $(VENV) .kafka .pytest_cache .hypothesis
