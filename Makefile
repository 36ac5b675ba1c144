# Every command a person or CI runs. Each target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench chaos clean

install: $(STAMP)

# The editable install asks for setuptools' compat mode: a plain sys.path entry instead of an
# import hook that every spawned worker would load (~15 ms each); where a setuptools no longer
# has that mode, the ordinary editable install does.
$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,redis,bench]' --config-settings editable_mode=compat \
		2>/dev/null || $(BIN)/pip install --quiet -e '.[test,redis,bench]'
	touch $(STAMP)

# The account sweep of examples/README.md, in local mode. A few accounts fail on
# purpose, so the run exits 1; anything else is a real error. No --total: the module's
# accounts.total tells the bar the count.
demo: install
	cd examples && ../$(BIN)/taskrunner spawn account_sweep:accounts account_sweep:check \
		--workers 2 --concurrency 8 --restart --state-dir ../.taskrunner; \
		code=$$?; test $$code -le 1

# Three test processes on 2 cores: most of a CLI test is waiting (interpreters starting,
# leases expiring, jobs sleeping), so a third keeps the cores busy; worksteal moves tests
# from a process still busy with long ones to one that has run out. About 4.5 minutes on
# 2 cores, against 5.5 with -n 2.
test: install
	$(BIN)/pytest -m "not slow" -n 3 --dist worksteal

lint: install
	$(BIN)/ruff check taskrunner tests benchmarks examples
	$(BIN)/ruff format --check taskrunner tests benchmarks examples

# `make bench BENCH_ARGS="--quick --only trivial"` passes options to benchmarks/run.py.
# Every contender runs from compiled bytecode, as an installed package does (pip compiles
# it; the standard library the peers use ships compiled): without it each of our processes
# would compile taskrunner's source anew, whenever PYTHONDONTWRITEBYTECODE is set.
bench: install
	$(BIN)/python -m compileall -q taskrunner benchmarks
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The seeded fault campaign (tests/chaos, about 5 minutes): `make chaos CHAOS_ARGS="--seed 42"`
# replays a seed, "--short" is the version `make test` runs, "--only NAME" one scenario.
chaos: install
	cd tests && ../$(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .taskrunner build *.egg-info
