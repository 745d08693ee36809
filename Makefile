# The two commands the README promises work on a fresh machine:
#   make demo   run the main job (local Kafka + OpenSearch, a worker, a simulated day with attacks)
#   make test   run every test (starts the services, runs unit + integration tests, stops them)
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install compile demo test services-up services-down bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	@[ -x $(VENV)/bin/python ] || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip wheel setuptools
	$(VENV)/bin/pip install -q -e ".[dev,compile]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# The detectors compiled by mypyc into build/mypyc (about two minutes; a no-op
# while current). Without a C compiler the Python sources run, a bit slower;
# under CI (CI set) a failed build fails.
compile: $(STAMP)
	@$(VENV)/bin/python deploy/compile_detectors.py || { [ -z "$$CI" ] || exit 1; \
	  echo "compile: the detectors were not compiled; the Python sources will run"; }

install: $(STAMP) compile

demo: install
	$(VENV)/bin/ueba demo

test: install
	bash deploy/run-tests.sh

services-up: install
	bash deploy/local.sh up

services-down:
	bash deploy/local.sh down

# Benchmarks print figures (ratios measured in one run); they assert nothing.
bench: install
	$(VENV)/bin/python -m detectors.bench
	$(VENV)/bin/python -m rules.bench
	$(VENV)/bin/python -m streams.simulate.bench
	$(VENV)/bin/python -m streams.statebench
	bash deploy/local.sh up && $(VENV)/bin/python -m streams.bench
	bash deploy/es-emulator.sh up && $(VENV)/bin/python -m streams.sinkbench

clean:
	bash deploy/local.sh down || true
	rm -rf deploy/.work .ueba-data build/mypyc
