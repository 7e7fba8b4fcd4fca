"""Analysis of trained and synthetic attention: concentration instruments (measurements.md §3).

``concentration``: the instruments of one attention matrix / module on (q, k); ``capture``: q, k
of every layer of a model through hooks, measured per layer; ``probe``: instruments during
pretraining (``analysis_every``); ``synthetic`` / ``checkpoint_mode``: the two modes of
``llnbench analyze`` (figures in ``plots`` / ``checkpoint_plots``).
"""

from llnbench.analysis.capture import (
    LayerInputs,
    attention_cores,
    capture_qk,
    layer_instruments,
    measure_layers,
)
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
    "LayerInputs",
    "Measurement",
    "attention_cores",
    "capture_qk",
    "causal_entropy_norm",
    "entropy_theory",
    "entry_var_theory",
    "entry_variance",
    "gap_theory",
    "input_stats",
    "instruments",
    "layer_instruments",
    "log_entry_moments",
    "log_mean_theory",
    "log_var_theory",
    "matrix_instruments",
    "measure",
    "measure_layers",
    "row_entropy",
    "spectral_gap",
]
