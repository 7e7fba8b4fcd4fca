"""Published numbers the report puts beside measured ones (spec attention.md §7.3).

Paper = Linear Log-Normal Attention, arXiv 2311.13541 (values from a third-party summary of the
paper, not checked against the PDF). LARA = arXiv 2204.04667, read off the authors' chart (±0.05).
"""

from __future__ import annotations

# Table 2: RoBERTa-base, batch 1, one training iteration; (GB, s); None = out of memory.
# The GPU is described only as one commercial card with more than 32 GB; SA was not a flash kernel.
TABLE2: dict[int, dict[str, tuple[float, float] | None]] = {
    4096: {"softmax": (32.1, 6.8), "lln": (7.5, 3.2), "lln_diag": (8.1, 3.6)},
    8192: {"softmax": None, "lln": (12.0, 6.1)},
    16384: {"softmax": None, "nystrom": (19.1, 16.7), "lln": (20.1, 11.8)},
}

# GLUE average over MNLI, QNLI, QQP and SST-2 (RoBERTa-base pretrained on WikiText-103).
GLUE_TASKS = ("mnli", "qnli", "qqp", "sst2")
GLUE_AVERAGE = {"softmax": 87.0, "lln": 85.4, "lln_diag": 86.9}

# LARA relative to vanilla softmax at N = 1k, 2k, 4k, 8k (one attention module).
LARA_VS_SOFTMAX = {
    "seq_len": (1024, 2048, 4096, 8192),
    "memory": (0.50, 0.23, 0.10, 0.04),
    "time": (2.1, 1.0, 0.28, 0.12),
}

# Mechanisms the paper's comparisons centre on: the report names any of them it has no run for.
CORE_MECHANISMS = ("softmax", "lln", "lln_diag")

# Long Range Arena: the average accuracy over LRA's five tasks (ListOps, Text, Retrieval, Image,
# Pathfinder) at LRA's sizes, as the LARA paper reports it; llnbench lra runs one task at a time.
LRA_AVERAGE_LARA = {"softmax": 59.08, "ra": 59.30, "performer": 57.63, "lara": 59.12}

# The mechanisms `llnbench report` expects in the LRA comparison (the README's table).
LRA_MECHANISMS = ("softmax", "lln", "lln_diag", "lara", "performer")
