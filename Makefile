# The two commands: `make demo` (the main job) and `make test` (the test suite).
# Both bootstrap what they need first; running them again is cheap.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/contracts/node_modules/.bin:$(PATH)

.PHONY: bootstrap demo test lint bench clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m dcp demo

test: bootstrap
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: bootstrap
	$(PY) -m ruff check .

bench: bootstrap
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .venv .tools contracts/node_modules .pytest_cache
