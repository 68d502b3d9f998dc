# Every target builds or refreshes .venv by itself; the install runs again only when pyproject.toml or
# constraints.txt changes. constraints.txt pins every package to the version the tests passed with;
# after changing a dependency, refresh it with `make constraints` and commit both files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sql test-citus bench screenshots lint lint-sql format clean constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Pin what the venv holds now (after a deliberate upgrade that passed `make test`).
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^pip==' > constraints.txt

# The demo: embedded server, schema, 10,000 seeded customers (once, with no backlog waiting for the first
# worker), an hour of healthy pipeline history for the Monitor, then live traffic and a worker in the
# background while the console runs; both stop when the console exits (traffic first, so the worker
# leaves nothing pending for the next run). Logs go to .demo/. To play an incident meanwhile, run
# `.venv/bin/opsconsole simulate --scenario incident` in another terminal.
demo: $(STAMP)
	$(BIN)/opsconsole db server start
	$(BIN)/opsconsole db migrate
	$(BIN)/opsconsole seed --customers 10000 --if-empty --backlog 0
	@mkdir -p .demo
	@# a first data-quality run so pane 3 has results; exit 1 only means a rule failed, which is fine here
	@$(BIN)/opsconsole dq run > .demo/dq.log 2>&1; test $$? -le 1 || (cat .demo/dq.log; exit 1)
	@$(BIN)/opsconsole simulate --scenario history --rate 200 > .demo/history.log 2>&1 || (cat .demo/history.log; exit 1)
	@$(BIN)/opsconsole simulate --rate 200 --pid-file .demo/simulate.pid > .demo/simulate.log 2>&1 & sim=$$!; \
	  $(BIN)/opsconsole worker > .demo/worker.log 2>&1 & wrk=$$!; \
	  trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null; sleep 1; kill $$wrk 2>/dev/null; wait $$wrk 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/opsconsole

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The SQL tests alone (used by .ci/run against PostgreSQL 15 via OPSCONSOLE_TEST_DSN).
test-sql: $(STAMP)
	$(BIN)/python -m pytest -q tests/sql

# The Citus tests alone: OPSCONSOLE_CITUS_DSN names a coordinator (and OPSCONSOLE_CITUS_CLUSTER_DIR
# cluster.sh's directory, for the node restart); .ci/run starts a 3-node cluster for them.
test-citus: $(STAMP)
	$(BIN)/python -m pytest -q -rs tests/citus

# make bench QUICK=1 runs small sizes (under a minute); ONLY=P1,P4 runs a subset.
bench: $(STAMP)
	$(BIN)/python -m bench.harness $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

screenshots: $(STAMP)
	$(BIN)/python -m tools.screenshots --out screenshots

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# squawk on the versioned migrations after the baseline (.squawk.toml lists the rules switched off and
# why); skipped with a message when squawk is not installed (npm install --prefix .tools squawk-cli).
lint-sql:
	tools/lint-sql

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build dist
