"""Shared test fixtures: offline everything, deterministic seeds, small random attention inputs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# One intra-op thread: the suite is thousands of tiny ops, where a second OpenMP thread costs more
# than it gains, and subprocess tests (torchrun, kill-and-resume) would oversubscribe 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
