# mensageria: `make run` runs the whole system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

AMQP_URI ?= amqp://guest:guest@localhost:5672/
RABBIT_API_URI ?= http://guest:guest@localhost:15672
TEST_POSTGRES_URI ?= postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
export AMQP_URI TEST_POSTGRES_URI

.PHONY: install run test test-unit lint format migrate shell messages clean bench

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

# Texts to translate (services/i18n): extract them from the code and templates into the template,
# then update each language's catalog (new texts untranslated, vanished ones dropped); translate
# what is new in the pt_BR catalog and run the tests (tests/unit/test_i18n.py finds any left out).
LOCALES := services/i18n/locales
LANGUAGES := en pt_BR

messages: install
	$(BIN)/pybabel extract --mapping-file babel.cfg --ignore-dirs ".* __pycache__" --add-comments TRANSLATORS: \
		--sort-by-file --width 120 --project mensageria --copyright-holder mensageria \
		--output-file $(LOCALES)/messages.pot .
	for language in $(LANGUAGES); do \
		$(BIN)/pybabel update --input-file $(LOCALES)/messages.pot --output-dir $(LOCALES) --locale $$language \
			--init-missing --ignore-obsolete --width 120 || exit 1; \
	done

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
