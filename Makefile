# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench check clean reliability

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/notifier demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check notifier tests bench reliability
	$(BIN)/mypy
	$(BIN)/lint-imports

# Every figure of the benchmark as JSON lines on stdout, under 10 minutes on 2 cores (bench/__main__.py).
bench: $(STAMP)
	$(BIN)/python -m bench

# Long seeded campaigns (crash, faults; figures as JSON lines, under 15 minutes on 2 cores); each prints its --seed.
reliability: $(STAMP)
	$(BIN)/python -m reliability

check: $(STAMP)
	$(BIN)/notifier check -c examples/notifier.toml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
