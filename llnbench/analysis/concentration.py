"""Attention-concentration instruments on dense row-stochastic matrices (measurements.md §3).

Every instrument is taken per (sequence, head) on the *real* block of P: the n_b × n_b sub-matrix
of a sequence's real tokens (padding excluded, so a short sequence is measured at its own length),
then averaged over sequences. Causal matrices are measured on their visible (lower-triangular)
entries. Everything runs in float64: ln of tiny entries and the eigenvalues of a 512 × 512
non-symmetric matrix need it.

Reading entropy H and spectral gap γ together separates the two kinds of concentration the LLN
paper discusses: low H with small γ is *unbiased* (each query looks at its own keys; the identity
has H = 0, γ = 0), low H with large γ is *biased* (every query looks at the same keys: H = 0,
γ = 1), and uniform attention is H = ln n, γ = 1.

``measure(attn, q, k, mask)`` is the entry point for both modes of ``llnbench analyze``: synthetic
Gaussian q, k here, and q, k captured from a trained layer in checkpoint mode.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from llnbench.attention.base import masked_std

# Instruments of one attention matrix, in the order tables and files show them.
MATRIX_INSTRUMENTS = ("entropy", "entropy_norm", "gap", "log_mean", "log_var", "entry_var")
# Statistics of the inputs q, k, per head: σ_q, σ_k, τ = 1/(σ_q σ_k), logit variance σ_q²σ_k².
INPUT_INSTRUMENTS = ("sigma_q", "sigma_k", "tau", "s2")
# LLN's temperatures from ``last_stats`` (module-level scalars, not per head).
TEMPERATURES = ("alpha", "beta", "sigma_tilde")
# Prefix of the LLN-branch instruments of a composite mechanism (lln_diag); the unprefixed
# instruments are always those of the module's own attention matrix (for lln_diag: the mixture).
LLN_BRANCH = "lln_branch_"

# measurements.md §3.2 [measured; N=512, d=64, q ~ N(0, σ²), k ~ N(0, 1)]: σ² -> mechanism -> value.
# Keys are the labels ``llnbench analyze`` uses; "exp (d^-1/4)" is lln with moment_matching=false.
REFERENCE_ENTROPY: dict[float, dict[str, float]] = {
    0.25: {"softmax": 6.12, "lln": 6.10, "exp (d^-1/4)": 6.24, "linear_elu": 6.23},
    1.0: {"softmax": 5.74, "lln": 5.53, "exp (d^-1/4)": 6.24, "linear_elu": 6.23},
    2.0: {"softmax": 5.26, "lln": 4.30, "exp (d^-1/4)": 6.24, "linear_elu": 6.23},
    4.0: {"softmax": 4.39, "lln": 3.14, "exp (d^-1/4)": 6.24, "linear_elu": 6.23},
}
REFERENCE_GAP: dict[float, dict[str, float]] = {
    0.25: {"softmax": 0.977, "lln": 0.971, "exp (d^-1/4)": 1.000, "linear_elu": 0.998},
    1.0: {"softmax": 0.936, "lln": 0.862, "exp (d^-1/4)": 0.999, "linear_elu": 0.997},
    2.0: {"softmax": 0.877, "lln": 0.750, "exp (d^-1/4)": 0.999, "linear_elu": 0.997},
    4.0: {"softmax": 0.798, "lln": 0.637, "exp (d^-1/4)": 0.998, "linear_elu": 0.996},
}
REFERENCE_SEQ_LEN = 512


# ---------------------------------------------------------------------------------------------
# Theory for softmax on Gaussian inputs (measurements.md §3.1): ln P_ij ≈ N(−ln N − σ²/2, σ²).


def entropy_theory(n: int, s2: float) -> float:
    """H ≈ ln N − σ²/2; drifts above the prediction for σ² ≥ 3."""
    return math.log(n) - s2 / 2


def gap_theory(n: int, s2: float) -> float:
    """γ ≈ 1 − √((e^{σ²} − 1)/N), clamped at 0; breaks for σ² ≳ 3."""
    return max(0.0, 1.0 - math.sqrt(math.expm1(s2) / n))


def log_var_theory(s2: float) -> float:
    """Var ln P ≈ σ² (the paper's Proposition 3.1 shape)."""
    return s2


def log_mean_theory(n: int, s2: float) -> float:
    """E ln P ≈ −ln N − σ²/2 (so that the log-normal entries average 1/N)."""
    return -math.log(n) - s2 / 2


def entry_var_theory(s2: float) -> float:
    """Var(P)·N² ≈ e^{σ²} − 1, the log-normal's relative variance; good for σ² ≤ 1.5."""
    return math.expm1(s2)


# ---------------------------------------------------------------------------------------------
# Per-matrix instruments: P (B, H, N, N) -> (B, H) per instrument.


def real_blocks(p: Tensor, mask: Tensor | None) -> Iterator[tuple[int, Tensor]]:
    """(b, P[b] restricted to sequence b's real tokens), the (H, n_b, n_b) blocks instruments see."""
    for b in range(p.shape[0]):
        if mask is None:
            yield b, p[b]
            continue
        idx = torch.nonzero(mask[b].to(device=p.device, dtype=torch.bool)).flatten()
        yield b, p[b][:, idx][:, :, idx]


def _visible(n: int, causal: bool, device: torch.device) -> Tensor:
    """(n, n) bool: key j visible to query i inside a real block (j <= i when causal)."""
    allowed = torch.ones(n, n, dtype=torch.bool, device=device)
    return allowed.tril() if causal else allowed


def _per_block(p: Tensor, mask: Tensor | None, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``fn`` ((H, n, n) -> (H,)) to every real block; (B, H) float64."""
    out = torch.empty(p.shape[0], p.shape[1], dtype=torch.float64, device=p.device)
    for b, block in real_blocks(p, mask):
        out[b] = fn(block.double())
    return out


def _row_entropies(block: Tensor) -> Tensor:
    """(H, n) −Σ_j P_ij ln P_ij, with 0 ln 0 = 0 (entries ≤ 0, e.g. Nyström's, contribute 0)."""
    positive = block.clamp_min(0.0)
    return -torch.special.xlogy(positive, positive).sum(-1)


def row_entropy(p: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, H) mean row entropy (nats): 0 for one-hot rows, ln n_b for uniform ones."""
    return _per_block(p, mask, lambda block: _row_entropies(block).mean(-1))


def causal_entropy_norm(p: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, H) mean of H_i / ln i over causal rows i ≥ 2 (row i sees i keys, so at most ln i).

    1 for uniform causal attention, 0 for one-hot rows; NaN for a single-token sequence.
    """

    def fn(block: Tensor) -> Tensor:
        n = block.shape[-1]
        if n < 2:
            return torch.full(block.shape[:1], math.nan, dtype=block.dtype, device=block.device)
        bound = torch.log(torch.arange(2, n + 1, dtype=block.dtype, device=block.device))
        return (_row_entropies(block)[:, 1:] / bound).mean(-1)

    return _per_block(p, mask, fn)


def spectral_gap(p: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, H) γ = 1 − |λ₂|, λ₂ the eigenvalue of second-largest modulus (Markov mixing notion).

    λ₁ = 1 for a row-stochastic matrix; γ ≈ 0 when P keeps tokens apart (identity-like), γ = 1
    when every row is the same distribution (rank one). NaN for a single-token sequence.
    """

    def fn(block: Tensor) -> Tensor:
        if block.shape[-1] < 2:
            return torch.full(block.shape[:1], math.nan, dtype=block.dtype, device=block.device)
        with _one_cpu_thread(block.device):
            moduli = torch.linalg.eigvals(block).abs()
        second = torch.topk(moduli, 2, dim=-1).values[..., 1]
        return 1.0 - second

    return _per_block(p, mask, fn)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run LAPACK's geev single-threaded on CPU: threads gain nothing at N ≤ 1024, and on a busy
    machine they spin against each other (measured, 2 loaded cores, 512 × 512: 0.36 s on one
    thread, up to 2.8 s on two)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def log_entry_moments(
    p: Tensor, mask: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    """(B, H) mean and (population) variance of ln P_ij over real, visible, positive entries."""
    means = torch.empty(p.shape[:2], dtype=torch.float64, device=p.device)
    variances = torch.empty_like(means)
    for b, block in real_blocks(p, mask):
        block = block.double()
        use = _visible(block.shape[-1], causal, block.device) & (block > 0)
        logp = torch.log(torch.where(use, block, 1.0))
        count = use.sum((-1, -2)).clamp_min(1)
        mean = (logp * use).sum((-1, -2)) / count
        centred = (logp - mean[:, None, None]) * use
        means[b], variances[b] = mean, (centred**2).sum((-1, -2)) / count
    return means, variances


def entry_variance(p: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """(B, H) Var(P)·n²: the variance of m_i P_ij over visible entries, m_i = row i's visible keys.

    For bidirectional rows m_i = n, so this is exactly Var(P)·n² (0 for uniform attention,
    ≈ e^{σ²} − 1 for softmax on Gaussian inputs); scaling each row by its own m_i keeps causal rows,
    whose mean entry is 1/i, comparable.
    """

    def fn(block: Tensor) -> Tensor:
        visible = _visible(block.shape[-1], causal, block.device)
        scaled = block * visible.sum(-1, keepdim=True).to(block.dtype)
        values = scaled[:, visible]  # (H, number of visible entries)
        return values.var(-1, unbiased=False)

    return _per_block(p, mask, fn)


def matrix_instruments(
    p: Tensor, mask: Tensor | None = None, causal: bool = False, *, gap: bool = True
) -> dict[str, Tensor]:
    """Every instrument of one (B, H, N, N) matrix as (B, H) float64 tensors.

    ``entropy_norm`` (H_i / ln i) is only defined for causal matrices; ``gap=False`` skips the
    eigenvalues, the one costly instrument (~0.3 s per 512 × 512 head on a CPU core).
    """
    p = p.detach().double()
    log_mean, log_var = log_entry_moments(p, mask, causal)
    out = {"entropy": row_entropy(p, mask)}
    if causal:
        out["entropy_norm"] = causal_entropy_norm(p, mask)
    if gap:
        out["gap"] = spectral_gap(p, mask)
    out.update(log_mean=log_mean, log_var=log_var, entry_var=entry_variance(p, mask, causal))
    return out


def input_stats(q: Tensor, k: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """(B, H) σ_q, σ_k (std of real entries per sequence and head), τ = 1/(σ_q σ_k), s2 = σ_q²σ_k².

    Softmax's logits q·k/√d have variance σ_q²σ_k² for independent Gaussian q, k, so τ is the
    effective temperature of a softmax layer and s2 the logit variance the theory is written in.
    """
    key_mask = None if mask is None else mask.to(device=q.device, dtype=torch.bool)
    sigma_q = masked_std(q.double(), key_mask, (2, 3))[..., 0, 0]
    sigma_k = masked_std(k.double(), key_mask, (2, 3))[..., 0, 0]
    return {
        "sigma_q": sigma_q,
        "sigma_k": sigma_k,
        "tau": 1.0 / (sigma_q * sigma_k),
        "s2": sigma_q**2 * sigma_k**2,
    }


# ---------------------------------------------------------------------------------------------
# Instruments of an attention module on (q, k): the entry point of both analyze modes.


@dataclass
class Measurement:
    """Instruments of one module on one (q, k, mask): per head (mean over sequences) and scalars.

    ``per_head[name]`` is an (H,) float64 tensor; ``scalars`` holds module-level values (LLN's
    α, β, σ̃ from ``last_stats``). Instruments of an LLN branch carry the ``lln_branch_`` prefix.
    """

    per_head: dict[str, Tensor] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """One number per instrument: the mean over heads (NaN where undefined everywhere)."""
        out = {name: _nanmean(values) for name, values in self.per_head.items()}
        out.update(self.scalars)
        return out

    def per_head_lists(self) -> dict[str, list[float]]:
        return {name: values.tolist() for name, values in self.per_head.items()}


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return finite.mean().item() if finite.numel() else math.nan


def attention_matrices(attn: nn.Module) -> dict[str, Callable[..., Tensor]]:
    """The matrices to measure, by prefix: the module's own and, for lln_diag, its LLN branch.

    For lln_diag the unprefixed matrix is the mixture 0.5·P_LLN + 0.5·P_block-softmax.
    """
    out: dict[str, Callable[..., Tensor]] = {"": attn.attention_matrix}
    branch = getattr(attn, "lln", None)
    if branch is not None and hasattr(branch, "attention_matrix"):
        out[LLN_BRANCH] = branch.attention_matrix
    return out


def temperatures(attn: nn.Module) -> dict[str, float]:
    """α, β, σ̃ from an LLN-style module's ``last_stats`` (empty for other mechanisms)."""
    stats = getattr(attn, "last_stats", None) or {}
    return {name: float(stats[name]) for name in TEMPERATURES if name in stats}


@torch.no_grad()
def measure(
    attn: nn.Module, q: Tensor, k: Tensor, mask: Tensor | None = None, *, gap: bool = True
) -> Measurement:
    """All instruments of ``attn`` on q, k (B, H, N, d) with an optional (B, N) real-token mask.

    Runs a float64 eval-mode copy of the module, so the caller's module keeps its dtype, mode,
    running statistics and ``last_stats``; stochastic mechanisms use their eval path.
    """
    module = copy.deepcopy(attn).to(torch.float64).eval()
    q, k = q.detach().double(), k.detach().double()
    causal = bool(getattr(module, "causal", False))
    per_head = {
        name: values.nanmean(0) for name, values in input_stats(q, k, mask).items()
    }  # (H,) each
    for prefix, matrix in attention_matrices(module).items():
        p = matrix(q, k, mask)
        for name, values in matrix_instruments(p, mask, causal, gap=gap).items():
            per_head[prefix + name] = values.nanmean(0)
    return Measurement(per_head=per_head, scalars=temperatures(module))


def instruments(
    attn: nn.Module, q: Tensor, k: Tensor, mask: Tensor | None = None, *, gap: bool = True
) -> dict[str, float]:
    """``measure(...).means()``: one float per instrument (per-head values: use ``measure``)."""
    return measure(attn, q, k, mask, gap=gap).means()
