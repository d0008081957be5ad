# The two commands a newcomer needs (see README):
#   make demo   install, bring the platform up, train a model end to end
#   make test   install, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(PYTHON) -m uv

.PHONY: install test demo up down clean

# --compile-bytecode: uv installs no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set
# (as on the development machines) every process would compile torch and Ray from source again:
# `import ray` 1.1 s -> 0.56 s, `import torch` 4.3 s -> 2.5 s here, for every Ray worker, trainer
# and test (bench/README.md, launch)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv
	test -x $(PY) || $(UV) venv -q -p $(PYTHON) $(VENV)
	$(UV) pip install -q --compile-bytecode -p $(PY) -e '.[dev,torch]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(PY) -m ray_app demo

up: install
	$(PY) -m ray_app up

down:
	$(PY) -m ray_app down

clean:
	rm -rf $(VENV)
