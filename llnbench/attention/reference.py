"""Naive float64 quadratic forms of each mechanism, written from the formulas, not from the fast code.

Used by the tests (exactness forward and backward) and by the analysis instruments. Everything here
forms N x N matrices explicitly, with no max shifts, chunking or SDPA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llnbench.attention.lln import PAPER_A, PAPER_B


def visible(n: int, key_mask: Tensor | None, causal: bool, batch: int = 1) -> Tensor:
    """(B, 1, N, N) bool: key j visible to query i (j real, and j <= i when causal). No self-rule."""
    allowed = torch.ones(batch, 1, n, n, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
    return allowed


def normalise_rows(w: Tensor, eps: float = 0.0, unit: Tensor | float = 1.0) -> Tensor:
    """w / (row sum + eps * unit); rows with no weight stay 0."""
    total = w.sum(-1, keepdim=True)
    # an all-zero row divides by 1 (not 0/0, whose NaN gradient torch.where would pass on)
    return w / torch.where(total > 0, total + eps * unit, torch.ones_like(total))


def largest_term(phi_q: Tensor, phi_k: Tensor, allowed: Tensor) -> Tensor:
    """(B, H, N, 1): max over visible keys j and features f of phi_q_if * phi_k_jf, the unit of
    a feature-map mechanism's eps (it then weighs the same in every row, whatever the scale).
    A constant for autograd, as in the mechanisms."""
    phi_q, phi_k = phi_q.detach().double(), phi_k.detach().double()
    terms = phi_q[..., :, None, :] * phi_k[..., None, :, :]  # (B, H, N, N, F)
    terms = terms.masked_fill(~allowed[..., None], 0.0)
    return terms.amax(dim=(-1, -2)).unsqueeze(-1)


def softmax_matrix(
    q: Tensor, k: Tensor, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """P_ij = exp(q_i.k_j / sqrt(d)) / sum over visible keys; rows with no visible key are 0."""
    q, k = q.double(), k.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = visible(q.shape[2], key_mask, causal, q.shape[0])
    logits = logits.masked_fill(~allowed, float("-inf"))
    row_max = logits.amax(-1, keepdim=True).clamp_min(-1e300)  # finite even for empty rows
    w = torch.exp(logits - row_max).masked_fill(~allowed, 0.0)
    return normalise_rows(w)


def block_softmax_matrix(
    q: Tensor, k: Tensor, block: int, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """Softmax restricted to consecutive blocks of ``block`` tokens, by an explicit loop over blocks."""
    b, h, n, _ = q.shape
    out = torch.zeros(b, h, n, n, dtype=torch.float64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        mask = None if key_mask is None else key_mask[:, start:stop]
        out[:, :, start:stop, start:stop] = softmax_matrix(
            q[:, :, start:stop], k[:, :, start:stop], mask, causal
        )
    return out


def real_std(x: Tensor, key_mask: Tensor | None, scope: str) -> Tensor:
    """Sample std (unbiased) of the real entries of x (B, H, N, d), gathered explicitly, per scope.

    Returns a tensor broadcastable against x: (1,1,1,1) for batch, (B,1,1,1) sequence, (B,H,1,1) head.
    """
    x = x.double()
    b, h, n, _ = x.shape
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    if scope == "batch":
        values = torch.cat([x[i][:, mask[i]].reshape(-1) for i in range(b)])
        return values.std().reshape(1, 1, 1, 1)
    if scope == "sequence":
        return torch.stack([x[i][:, mask[i]].std() for i in range(b)]).reshape(b, 1, 1, 1)
    if scope == "head":
        rows = [[x[i, j][mask[i]].std() for j in range(h)] for i in range(b)]
        return torch.tensor(rows, dtype=torch.float64).reshape(b, h, 1, 1)
    raise ValueError(scope)


def lln_temperatures(
    q: Tensor,
    k: Tensor,
    key_mask: Tensor | None = None,
    scope: str = "batch",
    a: float = PAPER_A,
    b: float = PAPER_B,
) -> tuple[Tensor, Tensor]:
    """Moment matching: alpha sigma_q = beta sigma_k = sqrt((sigma_q^2 sigma_k^2 - b) / 2a).

    Statistics are constants for autograd, as in the mechanism (no gradient through alpha, beta).
    """
    sq, sk = real_std(q.detach(), key_mask, scope), real_std(k.detach(), key_mask, scope)
    st = torch.sqrt((sq**2 * sk**2 - b) / (2 * a))
    return st / sq, st / sk


def lln_matrix(
    q: Tensor,
    k: Tensor,
    alpha: Tensor | float,
    beta: Tensor | float,
    key_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 0.0,
) -> Tensor:
    """P_ij = exp(alpha q_i) . exp(beta k_j) / (sum over visible l of the same + eps * the row's
    largest single term), unshifted."""
    q, k = q.double(), k.double()
    return feature_matrix(torch.exp(alpha * q), torch.exp(beta * k), key_mask, causal, eps)


def feature_matrix(
    phi_q: Tensor,
    phi_k: Tensor,
    key_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 0.0,
) -> Tensor:
    """Generic kernelised attention from explicit features: P_ij = phi_q_i . phi_k_j / (row sum +
    eps * the row's largest single term phi_q_if phi_k_jf)."""
    allowed = visible(phi_q.shape[2], key_mask, causal, phi_q.shape[0])
    w = phi_q.double() @ phi_k.double().transpose(-1, -2)
    w = w.masked_fill(~allowed, 0.0)
    unit = largest_term(phi_q, phi_k, allowed) if eps else 1.0
    return normalise_rows(w, eps, unit)


# ---------------------------------------------------------------------------------------------
# Comparison mechanisms (spec §4, §5): dense forms, loops where the fast code vectorises.


def _softmax_over(logits: Tensor, allowed: Tensor) -> Tensor:
    """Row softmax over the allowed entries (row-max shift only); rows with nothing allowed are 0."""
    logits = logits.masked_fill(~allowed, float("-inf"))
    row_max = logits.amax(-1, keepdim=True).clamp_min(-1e300)
    return normalise_rows(torch.exp(logits - row_max).masked_fill(~allowed, 0.0))


def band_softmax_matrix(
    q: Tensor, k: Tensor, window: int, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """Softmax over the visible keys with |i - j| <= window (j <= i as well when causal)."""
    q, k = q.double(), k.double()
    n = q.shape[2]
    pos = torch.arange(n)
    band = (pos[:, None] - pos[None, :]).abs() <= window
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return _softmax_over(logits, visible(n, key_mask, causal, q.shape[0]) & band)


def cosformer_matrix(
    q: Tensor,
    k: Tensor,
    key_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 1e-6,
    cos_m: str | int = "real",
) -> Tensor:
    """Left product: P_ij ∝ ReLU(q_i).ReLU(k_j) cos(pi (i - j) / 2M), row sums clamped at eps
    times the row's largest single term (which is never above the sum: a row sums to 1 exactly,
    or is all zero when no feature of its query meets a visible key's).

    i, j are positions among real tokens and M = n_b (``real``), positions in the padded sequence
    and M = N (``padded``), or positions among real tokens with a fixed M (an int).
    """
    q, k = torch.relu(q.double()), torch.relu(k.double())
    b, _, n, _ = q.shape
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    cos = torch.zeros(b, 1, n, n, dtype=torch.float64)
    for i in range(b):
        if cos_m == "padded":
            pos, m = torch.arange(1, n + 1, dtype=torch.float64), n
        else:
            pos = torch.cumsum(mask[i].double(), 0)
            m = int(mask[i].sum()) if cos_m == "real" else cos_m
        cos[i, 0] = torch.cos(math.pi * (pos[:, None] - pos[None, :]) / (2 * m))
    w = (q @ k.transpose(-1, -2) * cos).masked_fill(~visible(n, key_mask, causal, b), 0.0)
    return normalise_rows(w)


def favor_features(x: Tensor, w: Tensor) -> Tensor:
    """FAVOR+ phi(x) = m^(-1/2) exp(W x~ - |x~|^2 / 2), x~ = d^(-1/4) x; x (B,H,N,d), W (H,m,d)."""
    x = x.double() * x.shape[-1] ** -0.25
    w = w.double()
    logits = x @ w.transpose(-1, -2) - 0.5 * (x * x).sum(-1, keepdim=True)
    return torch.exp(logits) / math.sqrt(w.shape[-2])


def ra_mean_samples(
    q: Tensor, k: Tensor, key_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """RA's eval samples w_n = q_n + sum_m pi_nm k_m, pi = the softmax attention matrix."""
    return q.double() + softmax_matrix(q, k, key_mask, causal) @ k.double()


def ra_matrix(k: Tensor, w: Tensor, key_mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """P[n, m] = softmax over visible m of (w_n.k_m - |k_m|^2 / 2) / sqrt(d)."""
    k, w = k.double(), w.double()
    half_norm = 0.5 * (k * k).sum(-1)[:, :, None, :]
    logits = (w @ k.transpose(-1, -2) - half_norm) / math.sqrt(k.shape[-1])
    return _softmax_over(logits, visible(k.shape[2], key_mask, causal, k.shape[0]))


def segments(n_real: int, num_segments: int) -> list[list[int]]:
    """Ranks (among real tokens) in each segment: singletons if n_real <= C, else C - r of p, r of p+1."""
    if n_real <= num_segments:
        return [[t] for t in range(n_real)]
    p, r = divmod(n_real, num_segments)
    sizes = [p] * (num_segments - r) + [p + 1] * r
    starts = [sum(sizes[:c]) for c in range(num_segments)]
    return [list(range(s, s + size)) for s, size in zip(starts, sizes)]


def segment_means(x: Tensor, key_mask: Tensor | None, num_segments: int) -> tuple[Tensor, Tensor]:
    """Means (B,H,C,d) of x over the segments of each sequence's real tokens; (B,C) valid slots."""
    x = x.double()
    b, h, n, d = x.shape
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    means = torch.zeros(b, h, num_segments, d, dtype=torch.float64)
    valid = torch.zeros(b, num_segments, dtype=torch.bool)
    for i in range(b):
        real = torch.nonzero(mask[i]).flatten()
        for c, ranks in enumerate(segments(len(real), num_segments)):
            means[i, :, c] = x[i][:, real[ranks]].mean(-2)
            valid[i, c] = True
    return means, valid


def lara_matrix(
    q: Tensor,
    k: Tensor,
    mu: Tensor,
    w: Tensor,
    q_bar: Tensor,
    key_mask: Tensor | None = None,
    valid: Tensor | None = None,
    mis_type: str = "opt",
    alpha_coeff: float = 1.0,
) -> Tensor:
    """LARA's P[n, m] = sum_(c,s) beta[(c,s), n] softmax_m l(k_m, w_cs), one (c, n) at a time.

    Spec §4.3 steps 2-9 with l(x, w) = (w.x - |x|^2/2)/sqrt(d); mu, q_bar (B,H,C,d), w (B,H,C,S,d).
    Rows of padded queries are left 0.
    """
    q, k, mu, w, q_bar = (t.double() for t in (q, k, mu, w, q_bar))
    b, h, n, d = q.shape
    c_all, s_all = w.shape[2], w.shape[3]
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    valid = torch.ones(b, c_all, dtype=torch.bool) if valid is None else valid
    scale = d**-0.5

    def lf(x: Tensor, w_cs: Tensor) -> Tensor:
        return scale * (w_cs @ x - 0.5 * x @ x)

    out = torch.zeros(b, h, n, n, dtype=torch.float64)
    for i in range(b):
        real = [m for m in range(n) if mask[i, m]]
        slots = [c for c in range(c_all) if valid[i, c]]
        for j in range(h):
            rho = {}
            for c in slots:
                logits = torch.stack([scale * q_bar[i, j, c] @ q[i, j, t] for t in real])
                rho[c] = dict(zip(real, torch.softmax(logits, 0)))
            samples = []  # (c, w_cs, key probs over real, logZ, own, log mixture)
            for c in slots:
                for s in range(s_all):
                    w_cs = w[i, j, c, s]
                    lk = torch.stack([lf(k[i, j, m], w_cs) for m in real])
                    lmu = {c2: lf(mu[i, j, c2], w_cs) for c2 in slots}
                    log_mix = torch.logsumexp(torch.stack(list(lmu.values())), 0)
                    samples.append(
                        (c, w_cs, torch.softmax(lk, 0), torch.logsumexp(lk, 0), lmu[c], log_mix)
                    )
            for t in real:
                logits = []
                for c, w_cs, _, log_z, own, log_mix in samples:
                    if mis_type == "bh":
                        log_alpha, log_proposal = 0.0, log_mix
                    else:
                        corr = rho[c][t] - sum(rho[c2][t] for c2 in slots) / len(slots)
                        alpha = torch.exp(own - log_mix) + alpha_coeff * corr
                        log_alpha, log_proposal = torch.log(alpha.clamp_min(1e-8)), own
                    logits.append(log_alpha + lf(q[i, j, t], w_cs) + log_z - log_proposal)
                beta = torch.softmax(torch.stack(logits), 0)
                for weight, (_, _, probs, *_) in zip(beta, samples):
                    out[i, j, t, real] += weight * probs
    return out


def newton_schulz_inverse(a: Tensor, iters: int) -> Tensor:
    """Z0 = A^T / max column sum; Z <- Z (13I - AZ (15I - AZ (7I - AZ))) / 4, for one matrix."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    z = a.T / a.sum(0).max()
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_matrix(
    q: Tensor,
    k: Tensor,
    num_landmarks: int,
    key_mask: Tensor | None = None,
    pinv_iters: int = 0,
) -> Tensor:
    """F Z Bm on each sequence's real tokens only (C_b = min(C, n_b) landmarks); padded rows/cols 0.

    Z = pinv(A) when ``pinv_iters`` is 0, else that many Newton-Schulz iterations.
    """
    q, k = q.double() * q.shape[-1] ** -0.25, k.double() * k.shape[-1] ** -0.25
    b, h, n, _ = q.shape
    mask = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.bool()
    out = torch.zeros(b, h, n, n, dtype=torch.float64)
    for i in range(b):
        real = torch.nonzero(mask[i]).flatten()
        qr, kr = q[i : i + 1, :, real], k[i : i + 1, :, real]
        c_b = min(num_landmarks, len(real))
        q_bar, k_bar = (segment_means(x, None, num_landmarks)[0][:, :, :c_b] for x in (qr, kr))
        f = torch.softmax(qr @ k_bar.transpose(-1, -2), -1)[0]
        a = torch.softmax(q_bar @ k_bar.transpose(-1, -2), -1)[0]
        bm = torch.softmax(q_bar @ kr.transpose(-1, -2), -1)[0]
        for j in range(h):
            z = (
                torch.linalg.pinv(a[j])
                if pinv_iters == 0
                else newton_schulz_inverse(a[j], pinv_iters)
            )
            out[i, j, real[:, None], real[None, :]] = f[j] @ z @ bm[j]
    return out
