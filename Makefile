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

# gpu-check: the venv's python when there is one, else python3 (a GPU image's own torch)
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_ARGS ?=
# wheels for a GPU machine without a network (its python: 3.12, manylinux x86_64)
WHEEL_PY ?= 3.12
GPU_WHEELS := fla-core==0.6.0 hydra-core==1.3.8 omegaconf==2.3.1 einops

.PHONY: install test lint format demo bench bench-hf assets clean gpu-check gpu-check-dry-run \
	gpu-wheels kill-test \
	bad-inputs

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

# One timed GPU validation (<= 8 min): scale bidirectional/causal (softmax on every SDPA backend),
# a per-layer profile, compiled model rows, the longest model step, pretraining with and without
# compile, tests/test_gpu.py; results under runs/gpu-check/<stamp>/. Without CUDA it says so and
# exits 0. Wheels in .whl/ (make gpu-wheels) go into .gpu-site/ offline, first on PYTHONPATH.
GPU_PATH := $(CURDIR)/.gpu-site:$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
gpu-check:
	PYTHONPATH=$(GPU_PATH) $(GPU_PYTHON) -m llnbench.bench.gpu_check $(GPU_CHECK_ARGS)

# the same steps at tiny sizes on CPU (minutes on a busy 2-core machine)
gpu-check-dry-run:
	PYTHONPATH=$(GPU_PATH) $(GPU_PYTHON) -m llnbench.bench.gpu_check --dry-run $(GPU_CHECK_ARGS)

# .whl/: what gpu-check installs on a machine that reaches no registry (--wheels .whl)
gpu-wheels: install
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(WHEEL_PY) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3

assets: install
	$(PY) -m llnbench.data.build_assets

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
