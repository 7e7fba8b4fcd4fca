# llnbench: `make demo` runs the main job, `make test` the tests. Both set up .venv first.
#
# torch is installed first and pinned (TORCH) so a CPU machine never pulls a multi-GB CUDA build.
# GPU users: `make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"`,
# or install torch into .venv yourself first (any torch >= 2.4 satisfies the project).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= dev
PY     := $(VENV)/bin/python
OFFLINE := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
# the demo needs no network: the embedded corpus and tokenizer ship with the package
OFFLINE_DEMO := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1

.PHONY: install test lint format demo bench bench-hf assets clean kill-test bad-inputs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(OFFLINE) $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install
	$(OFFLINE_DEMO) $(VENV)/bin/llnbench pretrain attention=lln

# 20 random kill -9 each of pretraining and fine-tuning, every rerun resuming (minutes on CPU);
# SIGNAL=term sends SIGTERM instead
SIGNAL ?= kill
kill-test: install
	$(OFFLINE) $(PY) tests/stress/kill_resume.py --kills 20 --job pretrain --signal $(SIGNAL)
	$(OFFLINE) $(PY) tests/stress/kill_resume.py --kills 20 --job glue --signal $(SIGNAL)

# ~180 bad inputs through the CLI: a Markdown table of what each prints
bad-inputs: install
	$(OFFLINE) $(PY) tests/stress/bad_inputs.py

bench: install
	$(VENV)/bin/llnbench scale --attention all --max-len 8192 --mode fwdbwd

bench-hf: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m llnbench.bench.hf_compare

assets: install
	$(PY) -m llnbench.data.build_assets

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
