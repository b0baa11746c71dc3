# mensageria: `make run` runs the whole system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

AMQP_URI ?= amqp://guest:guest@localhost:5672/
RABBIT_API_URI ?= http://guest:guest@localhost:15672
TEST_POSTGRES_URI ?= postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
export AMQP_URI TEST_POSTGRES_URI

.PHONY: install run test test-unit lint format migrate shell clean bench

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	bin/run

test: install
	$(BIN)/python -m pytest --amqp-uri "$(AMQP_URI)" --rabbit-api-uri "$(RABBIT_API_URI)" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: install
	$(BIN)/python -m tools.migrate

shell: install
	PYTHONSTARTUP=tools/shell.py $(BIN)/nameko shell --config config.yaml

clean:
	rm -rf $(VENV) data .pytest_cache

# Benchmarks (benchmarks/README.md): benchmark-only dependencies on top of the runtime ones.
BENCH_STAMP := $(VENV)/.bench-$(shell cat requirements.txt benchmarks/requirements.txt | cksum | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	rm -f $(VENV)/.bench-* && touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --amqp-uri "$(AMQP_URI)" --rabbit-api-uri "$(RABBIT_API_URI)" \
		--postgres-uri "$(TEST_POSTGRES_URI)" $(BENCH_ARGS)
