# Everyday commands. `make repro` and `make test` are the README's two commands; both set up first.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true

.PHONY: setup repro test bench clean-data

setup:
	@bash scripts/setup.sh

repro: setup
	dvc repro

test: setup
	pytest

bench: setup
	python bench/features.py
