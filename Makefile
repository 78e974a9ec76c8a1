# The two commands of the README: `make run` and `make test`.
# Each creates the virtual environment and installs the project if needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= etc/notifications.toml
PORT ?= tcp:8080

.PHONY: run test lint format clean

$(BIN)/twistd: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/ here
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

run: $(BIN)/twistd
	$(BIN)/twistd --pidfile= -n notifications --port $(PORT) --config $(CONFIG)

test: $(BIN)/twistd
	$(BIN)/ruff check notifications tests twisted setup.py
	$(BIN)/ruff format --check notifications tests twisted setup.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(BIN)/twistd
	$(BIN)/ruff format notifications tests twisted setup.py
	$(BIN)/ruff check --fix notifications tests twisted setup.py

clean:
	rm -rf $(VENV) *.egg-info
