# Every target sets itself up on a fresh machine: it creates .venv (Python 3.11) and installs the
# exact versions pinned in constraints.txt, so a developer's machine gets what CI got.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
FUZZ_EXAMPLES ?= 2000
SOAK_RATE ?= 20
SOAK_DURATION ?= 60

.PHONY: all demo test lint format bench fuzz soak venv clean lock

all: test

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ibex demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ibex broker connectors tests bench deploy
	$(BIN)/ruff format --check ibex broker connectors tests bench deploy
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix ibex broker connectors tests bench
	$(BIN)/ruff format ibex broker connectors tests bench

# Every bench/bench_*.py, one after the other, into docs/BENCHMARKS.md (run it on an idle machine).
bench: $(STAMP)
	$(BIN)/python bench/report.py --out docs/BENCHMARKS.md

# The fuzz tests of `make test`, with many more examples (schemathesis on both OpenAPI documents,
# Hypothesis on the parsers and the policy input builder).
fuzz: $(STAMP)
	IBEX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider --timeout 3600 \
		tests/integration/test_fuzz_api.py tests/unit/test_fuzz_parsers.py

# A mixed workload at a fixed rate against a whole local federation; exit 1 on any error.
soak: $(STAMP)
	$(BIN)/python bench/soak.py --rate $(SOAK_RATE) --duration $(SOAK_DURATION)

# Re-pin constraints.txt from a fresh resolve (run deliberately, then review the diff).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
