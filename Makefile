# Every target installs what it needs into .venv first (python3 -m venv + pip), so a fresh
# clone needs only python3 >= 3.11 and the package index.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo demo-once test soak bench bench-peer clean

# Debian packages of the services some tests run for real (PostgreSQL for the lake, Prometheus and
# promtool for metrics and alert rules, Chromium for the pages). Needs root and apt-get; without
# them those tests skip and say why.
SYSTEM_PACKAGES := postgresql prometheus chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then echo "system packages present"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "warning: not root or no apt-get: not installing$$missing (their tests will skip)"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
	  >/dev/null || echo "warning: could not install$$missing (their tests will skip)"; fi

# The demo, then the recorder and the live page kept up until Ctrl-C: open the URL it prints.
demo: $(STAMP)
	$(BIN)/recorder demo --serve

# The demo alone: record, print the summary and the sample queries, exit.
demo-once: $(STAMP)
	$(BIN)/recorder demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile  # one process per core, a test file per process

soak: $(STAMP)
	HYPOTHESIS_PROFILE=explore FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_fastpaths.py tests/test_speedups.py --timeout=3600
	HYPOTHESIS_PROFILE=explore FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q -s -m "slow or not slow" tests/test_reliability.py tests/test_crash.py tests/test_lake_crash.py tests/test_lake_scale.py --timeout=3600
	cd tests && ../$(BIN)/python reliability_report.py

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.lake --repeats 9  # lake commit latency (1/4/8 writers) and lake vs plain ingest: bench-out/lake.json
	$(BIN)/python -m bench.scrape_cost  # CPU of one /metrics scrape: bench-out/scrape_cost.json
	$(BIN)/python -m bench.report  # docs/PERFORMANCE.md (with bench-out/peer.json when make bench-peer ran first)

# The recorder against cryptofeed (in a throw-away venv on Python 3.13+) on trades, same run, same pinning.
bench-peer: $(STAMP)
	$(BIN)/python -m bench.peer

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-data bench-out
