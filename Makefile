# Every target installs what it needs into .venv first (python3 -m venv + pip), so a fresh
# clone needs only python3 >= 3.11 and the package index.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test soak bench bench-peer clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recorder demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

soak: $(STAMP)
	FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q tests/test_fuzz.py --timeout=3600
	FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q -s -m "slow or not slow" tests/test_reliability.py tests/test_crash.py --timeout=3600
	cd tests && ../$(BIN)/python reliability_report.py

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.report

# The recorder against cryptofeed (in a throw-away venv on Python 3.13+) on trades, same run, same pinning.
bench-peer: $(STAMP)
	$(BIN)/python -m bench.peer

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-data bench-out
