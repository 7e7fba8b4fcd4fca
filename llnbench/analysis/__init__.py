"""Analysis of trained and synthetic attention: concentration instruments (measurements.md §3)."""

from llnbench.analysis.concentration import (
    LLN_BRANCH,
    Measurement,
    causal_entropy_norm,
    entropy_theory,
    entry_var_theory,
    entry_variance,
    gap_theory,
    input_stats,
    instruments,
    log_entry_moments,
    log_mean_theory,
    log_var_theory,
    matrix_instruments,
    measure,
    row_entropy,
    spectral_gap,
)

__all__ = [
    "LLN_BRANCH",
    "Measurement",
    "causal_entropy_norm",
    "entropy_theory",
    "entry_var_theory",
    "entry_variance",
    "gap_theory",
    "input_stats",
    "instruments",
    "log_entry_moments",
    "log_mean_theory",
    "log_var_theory",
    "matrix_instruments",
    "measure",
    "row_entropy",
    "spectral_gap",
]
