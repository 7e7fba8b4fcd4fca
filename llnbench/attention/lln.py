"""Linear Log-Normal attention (LLN, arXiv 2311.13541).

Feature maps phi_Q(q) = exp(alpha q), phi_K(k) = exp(beta k) (elementwise, dimension d, no random
features). alpha and beta are set each call by moment matching: the log-variance of LLN's attention
entries, modelled as a * (alpha^2 sigma_q^2 + beta^2 sigma_k^2) + b, is made equal to softmax's,
sigma_q^2 sigma_k^2, with the symmetric split alpha sigma_q = beta sigma_k = st.

Exactness: the max shifts cancel in the normalisation and make each query's largest term 1, so eps
moves a row sum by at most eps whatever the logits' scale; causal mode uses a running (prefix) key
shift so no later token can reach an earlier output (see ``exp_features`` in linear_core).
In eval mode a causal module uses running estimates of sigma_q, sigma_k (momentum 0.1, as BatchNorm)
for the same reason; bidirectional modules always use the statistics of the current call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from llnbench.attention.base import core_dtype, full_precision, key_mask_of, masked_std, upcast
from llnbench.attention.kernels import dispatch
from llnbench.attention.linear_core import MATMUL_DTYPES, FeatureMapAttention, exp_features
from llnbench.errors import ConfigError, one_of

# Published moment-matching constants (fitted at head dim 64).
PAPER_A = 0.14855178144710912
PAPER_B = -0.35487039130661086
CONSTANTS = ("auto", "paper", "fit")
STATS_SCOPES = {"batch": (0, 1, 2, 3), "sequence": (1, 2, 3), "head": (2, 3)}
_MIN_SIGMA = 1e-6


def _mean(x: Tensor) -> Tensor:
    """A statistic for logging: one value as it is (no kernel launch), else its mean."""
    return x.reshape(()) if x.numel() == 1 else x.mean()


@functools.cache
def fit_moment_constants(
    head_dim: int, *, n: int = 256, reps: int = 8, seed: int = 0
) -> tuple[float, float]:
    """Fit (a, b) in Var(ln P_LLN) ~ a * s2 + b for a head dim (spec §3.2), in float64.

    For s2 = 0.5, 1.0, ..., 17.0 and t = sqrt(s2 / 2): draw q, k ~ N(0, I) (n x d), build the LLN
    matrix with features exp(t q), exp(t k), and take the population variance of its log-entries;
    (a, b) is the least-squares line through the mean variance per s2.
    """
    gen = torch.Generator().manual_seed(seed)
    grid = [0.5 * i for i in range(1, 35)]
    variances = []
    for s2 in grid:
        t = math.sqrt(s2 / 2)
        total = 0.0
        for _ in range(reps):
            q = torch.randn(n, head_dim, generator=gen, dtype=torch.float64)
            k = torch.randn(n, head_dim, generator=gen, dtype=torch.float64)
            fq = torch.exp(t * q - (t * q).amax(-1, keepdim=True))
            fk = torch.exp(t * k - (t * k).max())
            w = fq @ fk.T
            log_p = torch.log(w / w.sum(-1, keepdim=True))
            total += log_p.var(unbiased=False).item()
        variances.append(total / reps)
    x = torch.tensor(grid, dtype=torch.float64)
    y = torch.tensor(variances, dtype=torch.float64)
    a = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    b = y.mean() - a * x.mean()
    return a.item(), b.item()


def moment_constants(head_dim: int, constants: str) -> tuple[float, float]:
    """``auto``: the published pair at d = 64, a fit elsewhere; ``paper``: always published; ``fit``."""
    if constants not in CONSTANTS:
        raise one_of("LLN constants", constants, CONSTANTS)
    if constants == "paper" or (constants == "auto" and head_dim == 64):
        return PAPER_A, PAPER_B
    return fit_moment_constants(head_dim)


def symmetric_temperatures(
    sigma_q: Tensor, sigma_k: Tensor, a: float, b: float
) -> tuple[Tensor, Tensor, Tensor]:
    """alpha, beta and st with alpha sigma_q = beta sigma_k = st, st^2 = (sigma_q^2 sigma_k^2 - b) / 2a."""
    target = sigma_q**2 * sigma_k**2
    st = ((target - b) / (2 * a)).clamp_min(1e-12).sqrt()
    return st / sigma_q, st / sigma_k, st


class LLNAttention(FeatureMapAttention):
    name = "lln"
    supports_causal = True
    largest_term_is_one = True  # exp_features' shifts: eps is relative to each query's top term

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        eps: float = 1e-8,
        constants: str = "auto",
        moment_matching: bool = True,
        stats_scope: str = "batch",
        fixed_alpha_beta: tuple[float, float] | list[float] | None = None,
        momentum: float = 0.1,
        chunk: int = 64,
        matmul_dtype: str = "fp32",
        backend: str = "auto",
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if stats_scope not in STATS_SCOPES:
            raise one_of("LLN stats_scope", stats_scope, list(STATS_SCOPES))
        if fixed_alpha_beta is not None and len(fixed_alpha_beta) != 2:
            raise ConfigError(f"fixed_alpha_beta must be two numbers, got {fixed_alpha_beta!r}")
        if chunk < 1:
            raise ConfigError(f"LLN chunk must be positive, got {chunk}")
        if matmul_dtype not in MATMUL_DTYPES:
            raise one_of("LLN matmul_dtype", matmul_dtype, list(MATMUL_DTYPES))
        if causal and matmul_dtype != "fp32":
            raise ConfigError(
                f"LLN matmul_dtype={matmul_dtype} applies to bidirectional attention only; "
                "causal LLN runs its chunked core in fp32"
            )
        dispatch.check_build(backend, causal=causal, head_dim=head_dim, matmul_dtype=matmul_dtype)
        self.backend = backend
        self._missing_package = dispatch.missing_package(causal) if backend == "auto" else None
        self.last_backend: str | None = None  # what ran the latest forward call
        self.fallback_reason: str | None = None  # why backend=auto ran torch, if it did
        self.matmul_dtype = matmul_dtype
        self.a, self.b = moment_constants(head_dim, constants)
        self.eps = float(eps)
        self.constants = constants
        self.moment_matching = bool(moment_matching)
        self.stats_scope = stats_scope
        self.fixed_alpha_beta = tuple(map(float, fixed_alpha_beta)) if fixed_alpha_beta else None
        self.momentum = float(momentum)
        self.chunk = int(chunk)
        # Running sigma_q, sigma_k for strictly causal evaluation (saved in the state dict).
        self.register_buffer("running_sigma_q", torch.ones(()))
        self.register_buffer("running_sigma_k", torch.ones(()))

    def options(self) -> dict[str, object]:
        return {
            "eps": self.eps,
            "constants": self.constants,
            "a": round(self.a, 6),
            "b": round(self.b, 6),
            "moment_matching": self.moment_matching,
            "stats_scope": self.stats_scope,
            "matmul_dtype": self.matmul_dtype,
            "backend": self.backend,
        }

    # -- backends -----------------------------------------------------------------------------

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        self.last_backend, self.fallback_reason = dispatch.select(
            self.backend, causal=self.causal, q=q, matmul_dtype=self.matmul_dtype,
            missing=self._missing_package,
        )  # fmt: skip
        if self.last_backend == "triton" and self.causal:
            return self._triton_causal(q, k, v, attention_mask)
        if self.last_backend == "triton":
            from llnbench.attention.kernels import triton_lln

            key_mask = key_mask_of(attention_mask, q)
            with full_precision(q.device):
                if self.moment_matching and self.fixed_alpha_beta is None:
                    # statistics and temperatures in two launches (the kernel's own reduction)
                    stats = triton_lln.moment_temperatures(
                        q, k, key_mask, self.stats_scope, self.a, self.b, min_sigma=_MIN_SIGMA
                    )
                    self.last_stats = {key: _mean(value) for key, value in stats.items()}
                    alpha, beta = stats["alpha"], stats["beta"]
                else:
                    alpha, beta = self.temperatures(q, k, key_mask)
                return triton_lln.lln_attention(q, k, v, alpha, beta, key_mask, eps=self.eps)
        return super().forward(q, k, v, attention_mask)  # torch, or the fla causal core

    def _triton_causal(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """The causal Triton kernel, from raw q, k, v; temperatures as on the torch path."""
        from llnbench.attention.kernels import triton_lln_causal

        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            alpha, beta = self.temperatures(*upcast(q, k), key_mask)
            return triton_lln_causal.lln_causal_attention(
                q, k, v, alpha, beta, key_mask, eps=self.eps,
                chunk=triton_lln_causal.kernel_chunk(self.chunk, self.head_dim),
            )  # fmt: skip

    def core_function(self) -> Callable[..., Tensor]:
        if self.last_backend == "fla":
            from llnbench.attention.kernels import fla_causal

            return fla_causal.linear_attention
        return super().core_function()

    # -- temperatures -------------------------------------------------------------------------

    @torch.no_grad()
    def temperatures(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, update_running: bool = True
    ) -> tuple[Tensor, Tensor]:
        """alpha, beta broadcastable against (B, H, N, d); constants for autograd."""
        dtype = core_dtype(q)
        if self.fixed_alpha_beta is not None:
            alpha, beta = (q.new_tensor(x, dtype=dtype) for x in self.fixed_alpha_beta)
            self.last_stats = {"alpha": alpha, "beta": beta}
            return alpha, beta
        if not self.moment_matching:
            alpha = beta = q.new_tensor(self.head_dim**-0.25, dtype=dtype)
            self.last_stats = {"alpha": alpha, "beta": beta}
            return alpha, beta
        if self.causal and not self.training:
            sigma_q = self.running_sigma_q.to(q.dtype)
            sigma_k = self.running_sigma_k.to(q.dtype)
        else:
            dims = STATS_SCOPES[self.stats_scope]
            sigma_q = masked_std(q, key_mask, dims).clamp_min(_MIN_SIGMA)
            sigma_k = masked_std(k, key_mask, dims).clamp_min(_MIN_SIGMA)
            if self.causal and update_running:
                m = self.momentum
                self.running_sigma_q.mul_(1 - m).add_(m * sigma_q.mean().to(torch.float32))
                self.running_sigma_k.mul_(1 - m).add_(m * sigma_k.mean().to(torch.float32))
        alpha, beta, st = symmetric_temperatures(sigma_q, sigma_k, self.a, self.b)
        self.last_stats = {
            "sigma_q": sigma_q.mean(),
            "sigma_k": sigma_k.mean(),
            "alpha": alpha.mean(),
            "beta": beta.mean(),
            "sigma_tilde": st.mean(),
        }
        return alpha, beta

    # -- features -----------------------------------------------------------------------------

    def feature_maps(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, eval_path: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """exp(alpha q), exp(beta k) after exact max shifts, in (0, 1]; causal key shift."""
        alpha, beta = self.temperatures(q, k, key_mask, update_running=not eval_path)
        return exp_features(alpha * q, beta * k, key_mask, self.causal)
