"""Randomized attention (RA, arXiv 2204.04667; code HKUNLP/efficient-attention).

Softmax attention is an expectation over random-feature estimators (spec §4.1, raw units):

    SA(q_n) = E_{w ~ p_n} f(w),   p_n = sum_m pi_nm N(q_n + k_m, sigma^2 I),   pi_n = softmax(q_n k^T / sqrt d)
    f(w) = sum_m softmax_m(l(k_m, w)) v_m,   l(x, w) = (w.x - |x|^2 / 2) / sqrt(d).

Training draws, for every query, m* ~ pi_n and w_n = q_n + k_m* + sigma eps. With sigma = d^(1/4)
(``noise="paper"``, unit variance in the paper's scaled space) the output is an unbiased estimate of
softmax attention; ``noise="code"`` (sigma = 1) is what the release samples while its density terms
assume the paper's scale, so it is biased.

Eval (spec §8 #17): ``eval_mode="mean"`` (default) uses the mixture mean w_n = q_n + sum_m pi_nm k_m,
deterministic; ``"sample"`` draws m* without noise, as the released code does.

Both products are softmax attentions, so they go through SDPA: pi @ k directly, and f(w) with the
augmented vectors [w, 1] . [k, -|k|^2 / 2] at scale 1/sqrt(d). Only sampling m* forms pi, in row chunks
without autograd. The identity holds on any key subset, so key padding and causal masks are exact
(the release ignores its mask); causal RA is an extension, not in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from llnbench.attention.base import (
    Attention,
    full_precision,
    key_mask_of,
    upcast_and_zero_padding,
    visibility,
)
from llnbench.errors import one_of

NOISES = ("paper", "code")
EVAL_MODES = ("mean", "sample")
# Elements of pi formed at once while sampling (64 MiB in fp32).
_SAMPLE_ELEMENTS = 1 << 24


def noise_std(noise: str, head_dim: int) -> float:
    """sigma_e in raw units: ``paper`` = d^(1/4) (unit variance in scaled space), ``code`` = 1."""
    return head_dim**0.25 if noise == "paper" else 1.0


def log_features(x: Tensor, w: Tensor) -> Tensor:
    """l(x_n, w_r) = (w_r . x_n - |x_n|^2 / 2) / sqrt(d): (B, H, R, N) from x (B, H, N, d), w (B, H, R, d)."""
    scale = x.shape[-1] ** -0.5  # applied to the small operands: one pass over the result
    return (scale * w) @ x.transpose(-1, -2) - (0.5 * scale) * x.square().sum(-1).unsqueeze(-2)


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool, scale: float
) -> Tensor:
    """SDPA over the visible keys (padded queries also see themselves, so no row is empty)."""
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    if causal:
        mask = visibility(key_mask, q.shape[2], True, q.device)
    else:
        mask = key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def ra_output(w: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool) -> Tensor:
    """f(w_n) = sum_m softmax_m(l(k_m, w_n)) v_m over the visible keys, as one SDPA call."""
    d = k.shape[-1]
    # [w, 1] . [k, -|k|^2 / 2], zero-padded with v to one width, a multiple of 8: the fused
    # (flash / memory-efficient) kernels need equal head dims and take no per-key bias
    width = 8 * math.ceil((d + 1) / 8)
    w_aug = F.pad(torch.cat([w, torch.ones_like(w[..., :1])], dim=-1), (0, width - d - 1))
    k_aug = F.pad(torch.cat([k, -0.5 * k.square().sum(-1, keepdim=True)], -1), (0, width - d - 1))
    out = _sdpa(w_aug, k_aug, F.pad(v, (0, width - d)), key_mask, causal, scale=d**-0.5)
    return out[..., :d]


@torch.no_grad()
def sample_keys(q: Tensor, k: Tensor, key_mask: Tensor | None, causal: bool) -> Tensor:
    """(B, H, N) indices m* ~ pi_n over each query's visible keys, forming pi a block of rows at a time.

    Inverse-CDF sampling: one uniform per query instead of one random number per (query, key), on
    the unnormalised cdf built in place (exp of the shifted logits, running sum).
    """
    b, h, n, d = q.shape
    index = torch.empty(b, h, n, dtype=torch.long, device=q.device)
    rows = max(1, _SAMPLE_ELEMENTS // (b * h * n))
    keys = torch.arange(n, device=q.device)
    k_t = k.transpose(-1, -2)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        cdf = (q[:, :, start:stop] * d**-0.5) @ k_t  # logits, then overwritten
        last = n - 1  # the last visible key of each row
        if key_mask is not None or causal:
            queries = keys[start:stop, None]
            allowed = (keys[None, :] <= queries) | (not causal)
            if key_mask is not None:
                allowed = allowed[None, None] & key_mask[:, None, None, :]
            allowed = allowed | (keys[None, :] == queries)  # padded queries see themselves
            cdf.masked_fill_(~allowed, float("-inf"))
            last = n - 1 - allowed.flip(-1).int().argmax(-1, keepdim=True)
        cdf = cdf.sub_(cdf.amax(-1, keepdim=True)).exp_().cumsum_(-1)
        u = torch.rand_like(cdf[..., :1]) * cdf[..., -1:]
        # the first key whose cdf exceeds u has positive probability; the bound only guards
        # against u rounding up to the total
        picks = torch.searchsorted(cdf, u, right=True).clamp_max(last)
        index[:, :, start:stop] = picks.squeeze(-1)
    return index


class RandomizedAttention(Attention):
    name = "ra"
    supports_causal = True
    linear_in_n = False
    stochastic = True
    complexity = "O(N^2 d)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        noise: str = "paper",
        eval_mode: str = "mean",
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if noise not in NOISES:
            raise one_of("RA noise", noise, NOISES)
        if eval_mode not in EVAL_MODES:
            raise one_of("RA eval_mode", eval_mode, EVAL_MODES)
        self.noise = noise
        self.eval_mode = eval_mode
        self.sigma = noise_std(noise, head_dim)

    def options(self) -> dict[str, object]:
        return {"noise": self.noise, "eval_mode": self.eval_mode}

    def sample_w(self, q: Tensor, k: Tensor, key_mask: Tensor | None) -> Tensor:
        """(B, H, N, d) per-query samples w_n: a fresh draw in training, the eval rule otherwise."""
        if not self.training:
            return self.eval_w(q, k, key_mask)
        w = q + _pick(k, sample_keys(q, k, key_mask, self.causal))
        return w + self.sigma * torch.randn_like(w)

    def eval_w(self, q: Tensor, k: Tensor, key_mask: Tensor | None) -> Tensor:
        """The eval rule: mixture mean (``mean``) or one noiseless draw (``sample``)."""
        if self.eval_mode == "mean":
            return q + _sdpa(q, k, k, key_mask, self.causal, scale=q.shape[-1] ** -0.5)
        return q + _pick(k, sample_keys(q, k, key_mask, self.causal))

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        with full_precision(q.device):
            q, k, v = upcast_and_zero_padding(key_mask, q, k, v)
            out = ra_output(self.sample_w(q, k, key_mask), k, v, key_mask, self.causal)
        return out.to(out_dtype)

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            q, k = upcast_and_zero_padding(key_mask, q, k)
            logits = log_features(k, self.eval_w(q, k, key_mask))  # [query n, key m]
            allowed = visibility(key_mask, q.shape[2], self.causal, q.device)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if key_mask is not None:  # a padded query's self-visibility is not a real column
                probs = probs.masked_fill(~key_mask[:, None, None, :], 0.0)
            return probs


def _pick(k: Tensor, index: Tensor) -> Tensor:
    """k_{index[b, h, n]} for every query: (B, H, N, d)."""
    return k.gather(2, index.unsqueeze(-1).expand_as(k))
