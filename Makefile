# Two commands for a fresh machine with Python 3.10+ and make: `make demo`, `make test`.
# Each creates .venv and installs jadam with what it needs (pinned by constraints.txt) on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions the suite was last run with (on Python 3.11); `make CONSTRAINTS= test` drops them.
CONSTRAINTS ?= constraints.txt
# torch.optim is the reference for the torch comparison tests, which skip without it.
# `make TORCH= test` leaves it out. (2.13.0 is the CPU build this kind of machine has on disk.)
TORCH ?= torch==2.13.0

.PHONY: demo test lint clean

# --no-compile: byte-compiling every installed module (torch's thousands) took 50 of the
# install's 93 s here; Python compiles the few it imports on first use instead.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[examples,test]' $(TORCH)
	touch $(STAMP)

# The main job: the CNN example on scikit-learn's 8x8 digits (offline), with its curves.
demo: $(STAMP)
	$(PY) -m examples.mnist --dataset digits --plot mnist_cnn.png

lint: $(STAMP)
	$(PY) -m ruff check jadam tests examples bench
	$(PY) -m mypy

# -n auto: one pytest worker per core (most of the suite's time is XLA compiling, one core each);
# --durations: the slowest tests, for keeping CI near 15 minutes.
test: lint
	$(PY) -m pytest -n auto --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
