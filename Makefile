# The zoo's commands. `make demo` sets everything up and runs the demo; `make test` runs the
# test suite (setting up first if needed). Both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider --durations=20

.PHONY: setup demo test test-slow test-all benchmark benchmark-train model-cards check-backends clean

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

# Default suite: everything but the slow end-to-end tests, heavy checks on the smallest
# variant of each family. TEST_WORKERS processes (pytest-xdist) share the tests a file at a
# time, each with a share of the cores (tests/conftest.py); TEST_WORKERS=0 runs them in this
# process. Each worker can hold a few GB: raise it with the machine's memory, not only its cores.
TEST_WORKERS ?= 2
test: setup
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile

# The slow end-to-end tests (torch.compile, training runs, every variant).
test-slow: setup
	$(PYTEST) -m "slow"

test-all: setup
	$(PYTEST) -m "slow or not slow"

# Every model on this machine (hours on 2 cores; split it with --family / MODEL lists, the
# JSON is merged per model): every backend eager and compiled, ONNX Runtime, dense memory,
# then eager again with freed memory kept (the table's "memory kept" columns), then the
# generated table and plots.
benchmark: setup
	$(PY) tools/benchmark.py --all --threads 1 --batch-size 32 --dense-sizes 512 1024 --compile --onnx \
		--json model_cards/benchmarks.json
	$(PY) tools/benchmark.py --all --threads 1 --batch-size 32 --backends default --retain-memory \
		--json model_cards/benchmarks.json
	$(PY) tools/model_cards.py

# The training step of every model as issue 22 asks (classifier at batch 32, dense 512x512 batch
# 2 and 1024x1024 batch 1; float32 and bfloat16 autocast; with and without grad checkpointing;
# eager and torch.compile), then the cards. Days on 2 cores: split it with MODEL lists and
# --train-dense-only / --precision / --grad-ckpt / --batch-size (the largest variants need a
# smaller classifier batch in 24 GB); each entry records its own run.
benchmark-train: setup
	$(PY) tools/benchmark.py --all --train --compile --threads 1 --batch-size 32 --json model_cards/benchmarks.json
	$(PY) tools/model_cards.py

model-cards: setup
	$(PY) tools/model_cards.py

# Every attention pattern x backend x dtype against its reference (forward and backward) and
# every family's smallest model per backend preference, on this machine (CUDA if present; on
# CPU it lists what it skipped); exits non-zero on a disagreement. Its JSON fills the cards'
# backend tables.
check-backends: setup
	$(PY) tools/check_backends.py --json model_cards/backends.json
	$(PY) tools/model_cards.py

clean:
	rm -rf $(VENV) build *.egg-info work_dirs
