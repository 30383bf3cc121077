# Every target installs what it needs into .venv first (python3 -m venv + pip), so a fresh
# clone needs only python3 >= 3.11 and the package index.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test soak bench clean

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
	FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q -s -m "slow or not slow" tests/test_reliability.py tests/test_crash.py tests/test_lake_crash.py tests/test_lake_scale.py --timeout=3600
	cd tests && ../$(BIN)/python reliability_report.py

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.report
	$(BIN)/python -m bench.lake  # lake commit latency (1/4/8 writers) and lake vs plain ingest: bench-out/lake.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-data bench-out
