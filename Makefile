# Everyday commands. `make repro` and `make test` are the README's two commands; both set up first.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
# Let Python cache compiled modules (.venv's and ours, __pycache__/: git- and DVC-ignored). Where the
# environment sets PYTHONDONTWRITEBYTECODE (this project's machines do), every process — each DVC
# stage, the CLI, each test's server and worker — compiled torch, pandas and the rest from source again:
# `import voicelock.enrollment` 5.0 s against 2.5 s cached, tests/test_dvc_repro.py 228 s against 143 s.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-pipeline repro test bench serve

setup:
	@bash scripts/setup.sh

setup-pipeline:  # what the pipeline needs, without the test-only chromium and postgresql
	@bash scripts/setup.sh pipeline

repro: setup-pipeline
	dvc repro
	voicelock promote
	dvc push  # to the default remote (.dvc/config: ~/.cache/voicelock/dvc-remote); a fresh clone: dvc pull

test: setup
	pytest

bench: setup
	python bench/features.py
	python bench/inference.py

serve: setup
	bentoml serve service.service:VoiceLock --host 127.0.0.1 --port 3000
