"""The shared core of every feature-map (kernelised) attention: LLN, Performer, elu+1, cosFormer.

Given non-negative features phi_q, phi_k (B, H, N, F) and values v (B, H, N, D):

    out_i = sum_j w_ij v_j / (sum_j w_ij + eps),   w_ij = phi_q_i . phi_k_j   (j <= i when causal)

computed without forming the N x N matrix. Callers cast to fp32 (or keep fp64) and disable autocast.

eps is scale-free in the mechanisms (``FeatureMapAttention``): it is relative to each query's largest
single term phi_q_if phi_k_jf (``row_unit``, or 1 by construction for ``exp_features``), so a row sums
to 1 within eps whatever the inputs' scale and whatever the stabilising shifts were.

Causal stabilisation. A feature map with an exponential (LLN, Performer) divides its key features by
exp(shift) to stay finite. Bidirectionally one global shift cancels exactly. Causally a global shift
would let a future key change earlier outputs through eps, so causal callers pass a per-key
``key_shift`` m_j that is a running (prefix) maximum: phi_k_j is stored divided by exp(m_j), and
query i weighs key j by phi_q_i . phi_k_j * exp(m_j - m_i) <= phi_q_i . phi_k_j, i.e. every weight is
expressed in the units of query i's own prefix maximum. This is scalar-decay linear attention
(the structure of RetNet/GLA), computed chunk by chunk with every decay factor in (0, 1].
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from llnbench.attention.base import (
    Attention,
    full_precision,
    key_mask_of,
    upcast_and_zero_padding,
)

GUARDS = ("add", "clamp")
MATMUL_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# Rows of the chunk-to-chunk decay matrix processed at once: bounds its memory to
# _CHUNK_ROWS x (N / chunk) per head, so causal memory stays linear in N.
_CHUNK_ROWS = 512
# Causal exp features: the most a query feature may exceed 1 by, as a log. fp32: e^60 times key
# features <= 1, summed over a chunk's 64 x 64 products, stays ~1e9 below overflow, and terms 1e-7
# below a row's largest stay above underflow; fp64 likewise with e^600.
QUERY_HEADROOM = {torch.float32: 60.0, torch.float64: 600.0}


def guard_denominator(den: Tensor, eps: float | Tensor, guard: str) -> Tensor:
    """``den + eps`` (add) or ``max(den, eps)`` (clamp); a row whose weights are all zero (and
    whose eps is zero) divides by 1, so its output is 0 rather than 0/0."""
    if guard == "add":
        guarded = den + eps
    elif guard == "clamp":
        guarded = torch.maximum(den, torch.as_tensor(eps, dtype=den.dtype, device=den.device))
    else:
        raise ValueError(f"unknown guard {guard!r}; allowed: {', '.join(GUARDS)}")
    return guarded.masked_fill(guarded == 0, 1.0)


def row_unit(
    phi_q: Tensor,
    phi_k: Tensor,
    *,
    causal: bool = False,
    key_shift: Tensor | None = None,
) -> Tensor:
    """(B, H, N, 1): each query's largest single term phi_q_if phi_k_jf over the keys it sees,
    in the units of its weights (with the causal ``key_shift`` decay); padded keys zeroed first.

    The denominator is a sum of such non-negative terms, so ``unit <= den``. Mechanisms scale eps
    by it: eps then weighs the same against every row however its features were shifted or
    scaled, and moves a row sum by at most eps, whatever the inputs (the stabilising max shifts
    make the absolute weights arbitrary, so an absolute eps would not). A constant for autograd,
    like the shifts."""
    phi_q, phi_k = phi_q.detach(), phi_k.detach()
    if not causal:
        return (phi_q * phi_k.amax(-2, keepdim=True)).amax(-1, keepdim=True)
    if key_shift is None:
        return (phi_q * phi_k.cummax(-2).values).amax(-1, keepdim=True)
    # key j's features are stored divided by exp(m_j); query i weighs them by exp(m_j - m_i)
    m = key_shift.unsqueeze(-1)
    log_k = torch.log(phi_k) + m  # -inf on padded keys
    seen = (log_k.cummax(-2).values - m).exp()
    return (phi_q * seen).amax(-1, keepdim=True)


def mask_keys(phi_k: Tensor, v: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Zero the features and values of padded keys (masked_fill, so inf/NaN junk cannot leak)."""
    if key_mask is None:
        return phi_k, v
    pad = ~key_mask[:, None, :, None]
    return phi_k.masked_fill(pad, 0.0), v.masked_fill(pad, 0.0)


def prefix_key_shift(key_logits_max: Tensor, key_mask: Tensor | None) -> Tensor:
    """Running maximum over real keys of a per-key log scale (B, H, N) -> non-decreasing (B, H, N).

    Positions before the first real key take the first real key's value, so the result is finite
    and non-decreasing everywhere.
    """
    x = key_logits_max
    if key_mask is not None:
        x = x.masked_fill(~key_mask[:, None, :], float("-inf"))
    m = torch.cummax(x, dim=-1).values
    if key_mask is not None:
        first = m.masked_fill(torch.isinf(m), float("inf")).amin(-1, keepdim=True)
        m = torch.where(torch.isinf(m), first, m)
    return m.detach()


def linear_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    *,
    causal: bool = False,
    eps: float | Tensor = 1e-6,
    guard: str = "add",
    chunk: int = 64,
    key_shift: Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> Tensor:
    """Normalised linear attention; see the module docstring. Returns (B, H, N, D).

    ``eps``: a number, or (B, H, N, 1) per query (mechanisms pass eps times ``row_unit``).
    ``key_shift`` (causal only): per-key log divisor already applied to phi_k, non-decreasing in N.
    ``matmul_dtype`` (bidirectional, opt-in): feed the two big matmuls in this dtype (bf16 tensor
    cores accumulate in fp32); features, state and normalisation stay in the input dtype.
    """
    phi_k, v = mask_keys(phi_k, v, key_mask)
    v = _with_ones(v)  # one pass then yields numerator and denominator together
    if causal:
        num_den = _causal_chunked(phi_q, phi_k, v, chunk, key_shift)
    else:
        state = _matmul(phi_k.transpose(-2, -1), v, matmul_dtype)  # (B, H, F, D + 1), never N x N
        num_den = _matmul(phi_q, state, matmul_dtype)
    num, den = num_den[..., :-1], num_den[..., -1:]
    return num / guard_denominator(den, eps, guard)


def _matmul(a: Tensor, b: Tensor, dtype: torch.dtype | None) -> Tensor:
    if dtype is None or dtype == a.dtype:
        return a @ b
    return (a.to(dtype) @ b.to(dtype)).to(a.dtype)


def _with_ones(v: Tensor) -> Tensor:
    """Append a ones column: the same pass then accumulates the normaliser sum_j w_ij."""
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _causal_chunked(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, chunk: int, key_shift: Tensor | None
) -> Tensor:
    """sum_{j<=i} phi_q_i . phi_k_j * exp(m_j - m_i) * v_j, in chunks of ``chunk`` positions."""
    b, h, n, f = phi_q.shape
    d = v.shape[-1]
    pad = (-n) % chunk
    if pad:
        phi_q, phi_k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v))
        if key_shift is not None:
            key_shift = torch.nn.functional.pad(key_shift, (0, pad), mode="replicate")
    c = (n + pad) // chunk
    q = phi_q.reshape(b, h, c, chunk, f)
    k = phi_k.reshape(b, h, c, chunk, f)
    vv = v.reshape(b, h, c, chunk, d)
    future = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)

    scores = q @ k.transpose(-1, -2)  # (b, h, c, C, C): intra-chunk weights
    if key_shift is None:
        intra = scores.masked_fill(future, 0.0) @ vv
        per_chunk = k.transpose(-1, -2) @ vv  # (b, h, c, F, D)
        # exclusive prefix (keys of earlier chunks), shifted rather than cumsum - own: the
        # subtraction would let a huge later key perturb earlier outputs through rounding
        states = torch.nn.functional.pad(per_chunk.cumsum(2)[:, :, :-1], (0, 0, 0, 0, 1, 0))
        out = q @ states + intra
        return out.reshape(b, h, n + pad, d)[:, :, :n]

    m = key_shift.reshape(b, h, c, chunk)
    # intra-chunk decay exp(m_j - m_i) for j <= i (<= 1 since m is non-decreasing)
    log_decay = (m.unsqueeze(-2) - m.unsqueeze(-1)).masked_fill(future, float("-inf"))
    intra = (scores * log_decay.exp()) @ vv
    end = m[..., -1]  # (b, h, c): the shift at each chunk's last position
    # chunk c's keys summarised in the units of its end shift
    per_chunk = (k * (m - end.unsqueeze(-1)).exp().unsqueeze(-1)).transpose(-1, -2) @ vv
    per_chunk = per_chunk.reshape(b, h, c, f * d)
    prev_end = torch.cat([m[..., :1, 0], end[..., :-1]], dim=-1)  # e_{c-1}; unused for chunk 0
    earlier = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    blocks = []
    for start in range(0, c, _CHUNK_ROWS):
        rows = slice(start, min(c, start + _CHUNK_ROWS))
        # state entering chunk r in units of e_{r-1}: sum_{r' < r} exp(e_{r'} - e_{r-1}) U_{r'}
        log_g = end.unsqueeze(-2) - prev_end[..., rows].unsqueeze(-1)
        blocks.append(log_g.masked_fill(~earlier[rows], float("-inf")).exp() @ per_chunk)
    states = torch.cat(blocks, dim=2).reshape(b, h, c, f, d)
    # query i of chunk r reads the state in its own units: times exp(e_{r-1} - m_i) <= 1
    q_scaled = q * (prev_end.unsqueeze(-1) - m).clamp_max(0.0).exp().unsqueeze(-1)
    out = q_scaled @ states + intra
    return out.reshape(b, h, n + pad, d)[:, :, :n]


def dense_linear_weights(
    phi_q: Tensor,
    phi_k: Tensor,
    key_mask: Tensor | None = None,
    *,
    causal: bool = False,
    key_shift: Tensor | None = None,
) -> Tensor:
    """The unnormalised (B, H, N, N) weights w_ij that ``linear_attention`` applies implicitly."""
    w = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        if key_shift is not None:
            log_decay = key_shift.unsqueeze(-2) - key_shift.unsqueeze(-1)  # [i, j] = m_j - m_i
            w = w * log_decay.clamp_max(0.0).exp()
        w = w.tril()
    if key_mask is not None:
        w = w.masked_fill(~key_mask[:, None, None, :], 0.0)
    return w


def dense_linear_matrix(w: Tensor, eps: float | Tensor, guard: str = "add") -> Tensor:
    """Row-normalise dense weights exactly as ``linear_attention`` normalises them."""
    return w / guard_denominator(w.sum(-1, keepdim=True), eps, guard)


def exp_features(
    log_q: Tensor,
    log_k: Tensor,
    key_mask: Tensor | None,
    causal: bool,
    log_scale: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """exp feature maps with exact max shifts (LLN, Performer), keys in (0, exp(log_scale)].

    Every shift scales a whole row of weights (one query's) or every weight alike, so it cancels
    in the normalisation; they are chosen so that each query's largest single term is exactly
    exp(2 log_scale) and no row underflows, however spread its logits are.

    Bidirectional: keys are divided by their per-feature maximum over real keys and the queries
    multiplied by it (the products are unchanged), then each query is divided by its largest
    feature. Causal: key j is divided by its prefix maximum m_j (returned as ``key_shift`` for the
    core to rescale), and query i by its largest term against the keys j <= i it sees, so no later
    key reaches it; query features stay below exp(QUERY_HEADROOM + log_scale), which leaves every
    product finite (a row whose query and keys are more than that many nats apart keeps a largest
    term below 1, the one case where eps weighs more than eps). Shifts are detached: the core scales eps to each row (``row_unit``),
    so the output does not depend on them and their gradient is zero. Padded keys get phi = 0,
    padded queries finite features.
    """
    if key_mask is not None:
        pad = ~key_mask[:, None, :, None]
        log_q = log_q.masked_fill(pad, 0.0)
        log_k = log_k.masked_fill(pad, float("-inf"))
    if causal:
        shift = prefix_key_shift(log_k.amax(-1).detach(), key_mask)  # (B, H, N), non-decreasing
        phi_k = torch.exp(log_k - (shift.unsqueeze(-1) - log_scale))
        # log of each feature's largest key so far, in the units of query i's weights (<= 0)
        seen = log_k.detach().cummax(-2).values - shift.unsqueeze(-1)
        best = (log_q.detach() + seen).amax(-1, keepdim=True)  # the row's largest term
        row_max = log_q.detach().amax(-1, keepdim=True)
        capped = torch.maximum(best, row_max - QUERY_HEADROOM.get(log_q.dtype, 60.0))
        q_shift = torch.where(torch.isfinite(best), capped, row_max)  # no key visible yet
        phi_q = torch.exp(log_q - (q_shift - log_scale))
        return phi_q, phi_k, shift
    feature_max = log_k.amax(-2, keepdim=True).detach()  # (B, H, 1, F) over real keys
    feature_max = torch.where(torch.isfinite(feature_max), feature_max, 0.0)  # no real key
    phi_k = torch.exp(log_k - (feature_max - log_scale))
    log_q = log_q + feature_max
    phi_q = torch.exp(log_q - (log_q.amax(-1, keepdim=True).detach() - log_scale))
    return phi_q, phi_k, None


class FeatureMapAttention(Attention):
    """Forward and attention_matrix of a kernelised mechanism; subclasses give the feature maps.

    Subclasses set ``self.eps`` and ``self.chunk`` and implement ``feature_maps``.
    """

    linear_in_n = True
    complexity = "O(N d^2)"
    guard: ClassVar[str] = "add"
    # the feature maps already make each query's largest term 1 (``exp_features``), so eps needs
    # no per-row unit; others get it from ``row_unit``
    largest_term_is_one: ClassVar[bool] = False
    eps: float
    chunk: int
    matmul_dtype: str = "fp32"  # a MATMUL_DTYPES key; subclasses that offer the option set it

    @abc.abstractmethod
    def feature_maps(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None, *, eval_path: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(phi_q, phi_k, causal key shift or None) from upcast q, k with zeroed padding.

        ``eval_path``: the deterministic path of ``attention_matrix`` (no running-statistics
        update, no random redraw), whatever the module's mode.
        """

    def core_function(self) -> Callable[..., Tensor]:
        """What turns features into outputs: ``linear_attention`` (LLN may use a GPU kernel)."""
        return linear_attention

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        with full_precision(q.device):
            q, k, v = upcast_and_zero_padding(key_mask, q, k, v)
            phi_q, phi_k, shift = self.feature_maps(q, k, key_mask, eval_path=False)
            out = self.core_function()(
                phi_q, phi_k, v, key_mask, causal=self.causal, guard=self.guard,
                eps=self.eps * self.eps_unit(phi_q, phi_k, key_mask, shift),
                chunk=self.chunk, key_shift=shift, matmul_dtype=MATMUL_DTYPES[self.matmul_dtype],
            )  # fmt: skip
        return out.to(out_dtype)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            q, k = upcast_and_zero_padding(key_mask, q, k)
            phi_q, phi_k, shift = self.feature_maps(q, k, key_mask, eval_path=True)
            w = dense_linear_weights(phi_q, phi_k, key_mask, causal=self.causal, key_shift=shift)
            unit = self.eps_unit(phi_q, phi_k, key_mask, shift)
            return dense_linear_matrix(w, self.eps * unit, self.guard)

    def eps_unit(
        self, phi_q: Tensor, phi_k: Tensor, key_mask: Tensor | None, shift: Tensor | None
    ) -> Tensor | float:
        """What eps is relative to, per query: its largest single term (see ``row_unit``)."""
        if self.largest_term_is_one:
            return 1.0
        phi_k = mask_keys(phi_k, phi_k, key_mask)[0]
        return row_unit(phi_q, phi_k, causal=self.causal, key_shift=shift)
