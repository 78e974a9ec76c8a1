# The two commands of the README: `make run` and `make test`.
# Each creates the virtual environment and installs the project if needed,
# and makes sure a RabbitMQ answers (devtools/rabbitmq.py, shared with .ci/run).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= etc/notifications.toml
PORT ?= tcp:8080
# Where `make run` keeps a private RabbitMQ node when the configured broker does not answer.
RABBITMQ_DIR ?= var/rabbitmq
LINTED := notifications tests twisted devtools benchmarks setup.py

.PHONY: run test lint format clean

$(BIN)/twistd: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/ here
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

# The daemon as it is when the configured broker answers; else beside a
# private node under $(RABBITMQ_DIR), stopped with it.
run: $(BIN)/twistd
	$(BIN)/python -m devtools.rabbitmq run --config $(CONFIG) --dir $(RABBITMQ_DIR) -- \
		$(BIN)/twistd --pidfile= -n notifications --port $(PORT) --config $(CONFIG)

test: $(BIN)/twistd
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m devtools.rabbitmq ensure
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(BIN)/twistd
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean:
	rm -rf $(VENV) *.egg-info
