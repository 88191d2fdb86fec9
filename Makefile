# precall — `make demo` and `make test` work from a clean clone (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PG_CRON_SO := $(wildcard /usr/lib/postgresql/*/lib/pg_cron.so)

.PHONY: install system-deps schema test test-unit demo demo-down bench bench-planning bench-throughput bench-throughput-fleet bench-lateness bench-lateness-provider bench-burst bench-sms-burst bench-receipts bench-sdk-ceiling bench-chaos bench-size typecheck clean

install: system-deps $(STAMP)

# Debian's PostgreSQL 15 and pg_cron, when running as root and they are absent.
system-deps:
ifeq ($(PG_CRON_SO),)
	@if [ "$$(id -u)" = 0 ]; then \
		echo "installing postgresql-15 and postgresql-15-cron (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-15-cron >/dev/null; \
	else \
		echo "pg_cron is missing: run 'sudo apt-get install postgresql-15 postgresql-15-cron' (or make as root)"; exit 1; \
	fi
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

test: install
	$(BIN)/precall templates check
	$(BIN)/pytest -q -rs

# The unit layer only (no PostgreSQL, no dispatcher or API process): seconds, not minutes.
test-unit: install
	$(BIN)/pytest -q -m unit

# sql/schema.sql: what `precall db migrate` builds in an empty database (tests/test_schema.py checks it).
schema: install
	$(BIN)/python -m precall.sql.dump

demo: install
	$(BIN)/precall demo run

demo-down:
	$(BIN)/precall demo db-down

bench: install
	$(BIN)/python bench/dispatch_latency.py

bench-planning: install
	$(BIN)/python bench/planning_cost.py

# precall with each FCM transport, then the peer (PgQueuer), one process each, push only, 20,000
# due at once: previews/s, CPU per preview, and the ratios, in one invocation.
bench-throughput: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/throughput.py --previews 20000 --dispatchers 1 --sms-share 0 --runs direct,sdk,pgqueuer

# The fleet figure: two dispatchers, 10% SMS, 50,000 due at once, one dispatcher profiled.
bench-throughput-fleet: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/throughput.py --previews 50000 --profile --out results_throughput_fleet.json

bench-lateness: install
	$(BIN)/python bench/throughput.py --previews 10000 --spread-s 600

# Lateness at the provider: 2,000 previews over 60 s, one dispatcher, the fake's arrival - send_at.
bench-lateness-provider: install
	$(BIN)/python bench/throughput.py --previews 2000 --spread-s 60 --dispatchers 1 --sms-share 0 --out results_lateness_provider.json

# 100,000 push previews for calls at the same second, smoothed to CAPACITY/s (set it to what
# bench-throughput measured): max_early = 100,000 / CAPACITY + 10 s.
CAPACITY ?= 1000
bench-burst: install
	$(BIN)/python bench/throughput.py --previews 100000 --dispatchers 1 --sms-share 0 --capacity $(CAPACITY) \
		--max-early $$(( 100000 / $(CAPACITY) + 10 )) --out results_burst.json

# 90 SMS due together at a 1/s long code (sms_capacity_per_s = 1).
bench-sms-burst: install
	$(BIN)/python bench/throughput.py --previews 90 --dispatchers 1 --sms-share 1 --capacity 1 --max-early 120 \
		--out results_sms_burst.json

# Receipts/s and p99 of `precall api --workers 2` beside the dispatcher's push rate, one invocation.
bench-receipts: install
	$(BIN)/python bench/receipts.py --previews 20000 --workers 2 --clients 50

bench-sdk-ceiling: install
	$(BIN)/python bench/sdk_ceiling.py

bench-chaos: install
	$(BIN)/python bench/chaos.py

# 300k users, 1M calls, 500k notification_logs: retention, the API's hot paths, planning.
bench-size: install
	$(BIN)/python bench/size.py

# mypy cannot see through setuptools' editable import hook: check a symlinked precall/ tree.
typecheck: install
	$(BIN)/python -m pip install -q mypy
	rm -rf build/mypy && mkdir -p build/mypy/precall
	for f in precall/*; do ln -s $(CURDIR)/$$f build/mypy/$$f; done
	for d in dispatcher cli api sql templates; do ln -s $(CURDIR)/$$d build/mypy/precall/$$d; done
	cd build/mypy && $(CURDIR)/$(BIN)/python -m mypy --ignore-missing-imports --disallow-untyped-defs \
		--check-untyped-defs --warn-unused-ignores -p precall

clean:
	-$(BIN)/precall demo db-down
	rm -rf .precall $(VENV) build *.egg-info
