# The two commands a newcomer needs (see README):
#   make demo   install, bring the platform up, train a model end to end
#   make test   install, lint and type-check (make lint), run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(PYTHON) -m uv
UV_VERSION := 0.13.9

.PHONY: install lint test demo up down clean

# One resolver, one lock: uv installs exactly uv.lock (`uv sync --frozen`, which also removes what
# the lock does not list), whatever the machine's pip configuration says; the trainer venvs are
# built by the same uv against the same versions (ray_app/runtime/venvs.py). After editing
# pyproject.toml: `$(UV) lock`.
# --compile-bytecode: uv installs no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set
# (as on the development machines) every process would compile torch and Ray from source again:
# `import ray` 1.1 s -> 0.56 s, `import torch` 4.3 s -> 2.5 s here, for every Ray worker, trainer
# and test (bench/README.md, launch)
$(VENV)/.installed: pyproject.toml uv.lock
	$(PYTHON) -m uv --version 2>/dev/null | grep -q '^uv $(UV_VERSION) ' || $(PYTHON) -m pip install -q 'uv==$(UV_VERSION)'
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --frozen --compile-bytecode -p $(PYTHON) --extra dev --extra torch
	touch $@

install: $(VENV)/.installed

# ruff (pyflakes + bugbear) and mypy (ray_app and the trainer SDK), configured in pyproject.toml;
# `make test`, and so CI (.ci/run), fails on either
lint: install
	$(PY) -m ruff check ray_app trainers tests bench
	$(PY) -m mypy

test: install lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(PY) -m ray_app demo

up: install
	$(PY) -m ray_app up

down:
	$(PY) -m ray_app down

clean:
	rm -rf $(VENV)
