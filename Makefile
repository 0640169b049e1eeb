# Set-up and entry points. `make demo` runs the main job on the embedded defaults; `make test` runs the linters, then the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg prometheus prometheus-pushgateway chromium
PYTEST_ARGS ?=

.PHONY: all venv apt deps demo test test-slow lint clean

all: deps

# Install the system packages the tests and media steps use, only when one is missing.
apt:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-pushgateway >/dev/null || missing="$$missing prometheus-pushgateway"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

# The stamp makes repeated runs cheap; it is redone when pyproject.toml changes.
$(VENV)/.deps-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps: apt $(VENV)/.deps-stamp

# The main job on the embedded defaults (a local-folder store and MLflow on sqlite under ./.adrender): the demo
# media, the tiny random-weight models, then a real render of the demo campaign.
demo: deps
	$(BIN)/python examples/demo/make_media.py
	$(BIN)/adrender models bootstrap-tiny
	$(BIN)/adrender render examples/demo/campaign.yaml

# The tests run after the linters: ruff, the formatting check and mypy fail `make test` (and so CI) first.
test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: deps
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check model_core components pipelines tests benchmarks
	$(BIN)/ruff format --check model_core components pipelines tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
