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
# `make submit` logs to http://HOST:PORT when either is given on the command line, else to
# $(MLFLOW_TRACKING_URI) when it is set, else to the server `make mlflow-server` starts.
SERVER_URI   := http://$(HOST):$(PORT)
ifneq ($(filter command line,$(origin HOST) $(origin PORT)),)
SUBMIT_URI   ?= $(SERVER_URI)
else
SUBMIT_URI   ?= $(or $(MLFLOW_TRACKING_URI),$(SERVER_URI))
endif
MLFLOW_DB    ?= sqlite:///mlflow.db
ARTIFACTS    ?= mlartifacts
RAY_PORT     ?= 6379
DASHBOARD_PORT ?= 8265
STORAGE      ?= $(CURDIR)/runs

.PHONY: install sweep test test-fast ui report probe bench lint mlflow-server cluster-up submit cluster-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/vgtune sweep $(SPEC) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

ui: $(STAMP)
	@echo "vgtune runs table: http://$(HOST):$(PORT)/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host $(HOST) --port $(PORT)

report: $(STAMP)
	$(BIN)/vgtune report $(if $(SWEEP),$(SWEEP),--last) $(ARGS)

probe: $(STAMP)
	$(BIN)/vgtune probe $(SPEC) $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check vgtune tests bench examples

mlflow-server: $(STAMP)
	$(BIN)/mlflow server --backend-store-uri $(MLFLOW_DB) --serve-artifacts --artifacts-destination $(ARTIFACTS) \
		--host $(HOST) --port $(PORT)

cluster-up: $(STAMP)
	$(BIN)/python -m vgtune.driver.cluster up --port $(RAY_PORT) --dashboard-port $(DASHBOARD_PORT)

submit: $(STAMP)
	$(BIN)/python -m vgtune.driver.cluster submit $(SPEC) --tracking-uri $(SUBMIT_URI) --storage $(STORAGE) \
		$(if $(ARGS),-- $(ARGS))

cluster-down: $(STAMP)
	$(BIN)/python -m vgtune.driver.cluster down

clean:
	rm -rf runs reports mlruns mlartifacts .bench
