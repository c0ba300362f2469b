# vgtune — every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SPEC   ?= sweeps/default.yaml
SWEEP  ?=
ARGS   ?=
HOST   ?= 127.0.0.1
PORT   ?= 5000
TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: install sweep test ui report probe bench lint mlflow-server cluster-up submit cluster-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/vgtune sweep $(SPEC) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host $(HOST) --port $(PORT)

report: $(STAMP)
	$(BIN)/vgtune report $(if $(SWEEP),$(SWEEP),--last) $(ARGS)

probe: $(STAMP)
	$(BIN)/vgtune probe $(SPEC) $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check vgtune tests bench

clean:
	rm -rf runs reports mlruns mlartifacts .bench
