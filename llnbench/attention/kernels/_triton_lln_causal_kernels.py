"""Triton kernels of the chunked causal LLN (launched by ``triton_lln_causal``; do not import directly).

Tensors are (B, H, N, d) with unit stride on d; a program covers one (b, h) and one chunk of
``CHUNK`` rows, except the two scans, which walk the chunks of one (b, h) in order for a block of
``BLOCK_K`` feature rows of the state. Everything is fp32 in registers whatever the input dtype.

The math is ``linear_core``'s causal path with ``exp_features``' shifts, written per chunk r:
log_q = alpha q, log_k = beta k (-inf on padded keys), m_j = running max over real keys j' <= j
of max_t log_k_j't (-inf before the first real key), e_r = m at the end of chunk r (e_{-1} = -inf),

    phi_k_j = exp(log_k_j - m_j),   phi_q_i = exp(log_q_i - c_i)   (c_i: ``exp_features``' shift),
    w_ij = phi_q_i . phi_k_j exp(m_j - m_i)   (j <= i),   out_i = sum_j w_ij v_j / (sum_j w_ij + eps).

Every exp factor is <= 1: keys of earlier chunks reach chunk r through the state H_r =
sum_{j < chunk r} exp(log_k_j - e_{r-1}) v_j^T (units of e_{r-1}), read by query i times
exp(e_{r-1} - m_i). Backward carries the mirror state G_r = sum_{i > chunk r} exp(e_r - m_i)
phi_q_i^T dO_i from the last chunk down. Shifts (m, c) are constants for autograd, as on the torch
path, so dq = alpha phi_q dphi_q and dk = beta phi_k dphi_k on real rows, 0 on padded ones.

``TRITON_INTERPRET=1`` must be set before this module is imported for the kernels to run on CPU
tensors (``triton.jit`` reads it when it decorates): ``INTERPRETED`` records which build this is.
"""

from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)
# compiled kernels may read a global only when it is a constexpr
NEG_INF = tl.constexpr(float("-inf"))
# the scans walk N / chunk chunks in order: software-pipeline their loads (they do not depend on
# the carried state), else every step waits for a global load
SCAN_STAGES = tl.constexpr(2)


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, valid):
    """A (rows x D) tile of a (B, H, N, d) tensor as fp32, 0 where not ``valid``."""
    ptrs = X + b * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    return tl.load(ptrs, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def _store(X, b, h, offs_n, offs_d, sxb, sxh, sxn, value, keep):
    ptrs = X + b * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    tl.store(ptrs, value.to(X.dtype.element_ty), mask=keep)


@triton.jit
def _real_rows(MASK, b, offs_n, N, smb, HAS_MASK: tl.constexpr):
    inside = offs_n < N
    if HAS_MASK:
        inside = inside & (tl.load(MASK + b * smb + offs_n, mask=inside, other=0) != 0)
    return inside


@triton.jit
def _key_logits(K, b, h, offs_n, offs_d, skb, skh, skn, real, dmask, beta):
    """beta k on real rows and features, -inf elsewhere (such a key weighs exp(-inf) = 0)."""
    valid = real[:, None] & dmask[None, :]
    k = _rows(K, b, h, offs_n, offs_d, skb, skh, skn, valid)
    return tl.where(valid, k * beta, NEG_INF)


@triton.jit
def _features(
    Q, K, MASK, EP, VEC, b, h, bh, r, n_chunks, N, d, alpha, beta, headroom,
    sqb, sqh, sqn, skb, skh, skn, smb,
    HAS_MASK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Chunk r's features and shifts as ``exp_features`` builds them (causal), from the scan's
    e_{r-1} and per-feature prefix maxima. Returns phi_q, phi_k, log_k, m, e_{r-1}, real rows."""
    offs_n = r * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    real = _real_rows(MASK, b, offs_n, N, smb, HAS_MASK)
    log_k = _key_logits(K, b, h, offs_n, offs_d, skb, skh, skn, real, dmask, beta)
    # padded queries read as 0 (their log features are 0), as the torch path zeroes them
    q = _rows(Q, b, h, offs_n, offs_d, sqb, sqh, sqn, real[:, None] & dmask[None, :])
    log_q = tl.where(dmask[None, :], q * alpha, NEG_INF)
    e_prev = tl.load(EP + bh * (n_chunks + 1) + r)
    prefix = tl.load(VEC + ((bh * n_chunks + r) * 2 + 1) * BLOCK_D + offs_d)  # per feature
    m = tl.maximum(tl.associative_scan(tl.max(log_k, axis=1), 0, _maximum), e_prev)
    seen_abs = tl.maximum(tl.associative_scan(log_k, 0, _maximum), prefix[None, :])
    finite = m > NEG_INF  # some real key at or before the row
    seen = tl.where(finite[:, None], seen_abs - tl.where(finite, m, 0.0)[:, None], NEG_INF)
    best = tl.max(log_q + seen, axis=1)  # the row's largest term, as a log
    row_max = tl.max(log_q, axis=1)
    shift = tl.where(best > NEG_INF, tl.maximum(best, row_max - headroom), row_max)
    phi_q = tl.exp(log_q - shift[:, None])
    phi_k = tl.where(finite[:, None], tl.exp(log_k - tl.where(finite, m, 0.0)[:, None]), 0.0)
    return phi_q, phi_k, log_k, m, e_prev, real


@triton.jit
def _decay(m, CHUNK: tl.constexpr):
    """exp(m_j - m_i) for j <= i in the chunk, 0 above the diagonal and for rows with no key."""
    idx = tl.arange(0, CHUNK)
    keep = (idx[None, :] <= idx[:, None]) & (m > NEG_INF)[:, None]
    m_safe = tl.where(m > NEG_INF, m, 0.0)
    return tl.where(keep, tl.exp(tl.minimum(m_safe[None, :] - m_safe[:, None], 0.0)), 0.0)


@triton.jit
def _state_scale(e_prev, m):
    """exp(e_{r-1} - m_i) <= 1: how query i reads the state entering its chunk (0 if empty)."""
    m_safe = tl.where(m > NEG_INF, m, 0.0)
    return tl.where(e_prev > NEG_INF, tl.exp(tl.minimum(e_prev - m_safe, 0.0)), 0.0)


@triton.jit
def _load_state(S, VEC, bh, r, n_chunks, BLOCK_D: tl.constexpr):
    """Chunk r's (D x D) state and its normaliser vector."""
    offs = tl.arange(0, BLOCK_D)
    tile = offs[:, None] * BLOCK_D + offs[None, :]
    state = tl.load(S + (bh * n_chunks + r) * BLOCK_D * BLOCK_D + tile)
    return state, tl.load(VEC + (bh * n_chunks + r) * 2 * BLOCK_D + offs)


@triton.jit
def chunk_summary_kernel(
    K, V, MASK, BETA, LM, FM, U, UZ, H, N, d, n_chunks, ab_div,
    skb, skh, skn, svb, svh, svn, smb,
    HAS_MASK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Per chunk, in its own units lm = max of its key logits: U = sum_j exp(log_k_j - lm) v_j^T,
    uz = sum_j exp(log_k_j - lm), and the per-feature maxima FM (all -inf / 0 for padding only)."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    r = tl.program_id(1)
    b = bh // H
    h = bh % H
    beta = tl.load(BETA + bh // ab_div)
    offs_n = r * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    real = _real_rows(MASK, b, offs_n, N, smb, HAS_MASK)
    log_k = _key_logits(K, b, h, offs_n, offs_d, skb, skh, skn, real, dmask, beta)
    v = _rows(V, b, h, offs_n, offs_d, svb, svh, svn, real[:, None] & dmask[None, :])
    feature_max = tl.max(log_k, axis=0)
    lm = tl.max(feature_max, axis=0)
    kk = tl.where(lm > NEG_INF, tl.exp(log_k - tl.where(lm > NEG_INF, lm, 0.0)), 0.0)
    prog = bh * n_chunks + r
    tile = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    tl.store(
        U + prog * BLOCK_D * BLOCK_D + tile, tl.dot(tl.trans(kk), v, input_precision=PRECISION)
    )
    tl.store(UZ + prog * BLOCK_D + offs_d, tl.sum(kk, axis=0))
    tl.store(FM + prog * BLOCK_D + offs_d, feature_max)
    tl.store(LM + prog, lm)


@triton.jit
def prefix_scan_kernel(
    LM, FM, U, UZ, S, VEC, EP, n_chunks, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """For rows [k0, k0 + BLOCK_K) of the state of one (b, h), chunk by chunk: the state entering
    chunk r in units of e_{r-1} (S, and VEC[.., 0] its normaliser), VEC[.., 1] the per-feature
    prefix maxima, EP[r] = e_{r-1} (EP[n_chunks] = the last chunk's end)."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    kb = tl.program_id(1)
    rows = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    cols = tl.arange(0, BLOCK_D)
    tile = rows[:, None] * BLOCK_D + cols[None, :]
    state = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    z = tl.zeros([BLOCK_K], dtype=tl.float32)
    prefix = tl.full([BLOCK_K], NEG_INF, dtype=tl.float32)
    e_prev = tl.full([], NEG_INF, dtype=tl.float32)
    for r in tl.range(0, n_chunks, num_stages=SCAN_STAGES):  # prefetch the next chunks
        prog = bh * n_chunks + r
        tl.store(S + prog * BLOCK_D * BLOCK_D + tile, state)
        tl.store(VEC + prog * 2 * BLOCK_D + rows, z)
        tl.store(VEC + (prog * 2 + 1) * BLOCK_D + rows, prefix)
        if kb == 0:
            tl.store(EP + bh * (n_chunks + 1) + r, e_prev)
        lm = tl.load(LM + prog)
        e_new = tl.maximum(e_prev, lm)
        e_safe = tl.where(e_new > NEG_INF, e_new, 0.0)
        old = tl.where(e_prev > NEG_INF, tl.exp(e_prev - e_safe), 0.0)
        new = tl.where(lm > NEG_INF, tl.exp(lm - e_safe), 0.0)
        state = old * state + new * tl.load(U + prog * BLOCK_D * BLOCK_D + tile)
        z = old * z + new * tl.load(UZ + prog * BLOCK_D + rows)
        prefix = tl.maximum(prefix, tl.load(FM + prog * BLOCK_D + rows))
        e_prev = e_new
    if kb == 0:
        tl.store(EP + bh * (n_chunks + 1) + n_chunks, e_prev)


@triton.jit
def _chunk_forward(phi_q, phi_k, v, m, e_prev, state, z, eps, CHUNK: tl.constexpr,
                   PRECISION: tl.constexpr):  # fmt: skip
    """(intra-chunk weights w, state scale per row, numerator, guarded denominator)."""
    w = tl.dot(phi_q, tl.trans(phi_k), input_precision=PRECISION) * _decay(m, CHUNK)
    scale = _state_scale(e_prev, m)
    num = tl.dot(w, v, input_precision=PRECISION)
    num += scale[:, None] * tl.dot(phi_q, state, input_precision=PRECISION)
    den = tl.sum(w, axis=1) + scale * tl.sum(phi_q * z[None, :], axis=1) + eps
    return w, scale, num, tl.where(den == 0.0, 1.0, den)  # 0/0 rows (eps = 0) give 0


@triton.jit
def chunk_output_kernel(
    Q, K, V, MASK, ALPHA, BETA, S, VEC, EP, OUT, eps, headroom, H, N, d, n_chunks, ab_div,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, smb,
    HAS_MASK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """out of chunk r: intra-chunk quadratic part plus the state of the earlier chunks."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    r = tl.program_id(1)
    b = bh // H
    h = bh % H
    alpha = tl.load(ALPHA + bh // ab_div)
    beta = tl.load(BETA + bh // ab_div)
    phi_q, phi_k, _, m, e_prev, real = _features(
        Q, K, MASK, EP, VEC, b, h, bh, r, n_chunks, N, d, alpha, beta, headroom,
        sqb, sqh, sqn, skb, skh, skn, smb, HAS_MASK, CHUNK, BLOCK_D,
    )  # fmt: skip
    offs_n = r * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    v = _rows(V, b, h, offs_n, offs_d, svb, svh, svn, real[:, None] & dmask[None, :])
    state, z = _load_state(S, VEC, bh, r, n_chunks, BLOCK_D)
    _, _, num, den = _chunk_forward(phi_q, phi_k, v, m, e_prev, state, z, eps, CHUNK, PRECISION)
    keep = (offs_n < N)[:, None] & dmask[None, :]
    _store(OUT, b, h, offs_n, offs_d, sob, soh, son, num / den[:, None], keep)


@triton.jit
def query_backward_kernel(
    Q, K, V, MASK, ALPHA, BETA, S, VEC, EP, GRAD, DQ, ROWS, W, WZ,
    eps, headroom, H, N, d, n_chunks, ab_div,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn, sdb, sdh, sdn, smb,
    HAS_MASK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Chunk r: recompute the output, then dq; store per row 1/den and g.out/den (ROWS) for the
    key pass, and the chunk's piece of the backward state, W = sum_i scale_i phi_q_i^T dnum_i
    (WZ: with dden_i), in units of e_{r-1}."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    r = tl.program_id(1)
    b = bh // H
    h = bh % H
    alpha = tl.load(ALPHA + bh // ab_div)
    beta = tl.load(BETA + bh // ab_div)
    phi_q, phi_k, _, m, e_prev, real = _features(
        Q, K, MASK, EP, VEC, b, h, bh, r, n_chunks, N, d, alpha, beta, headroom,
        sqb, sqh, sqn, skb, skh, skn, smb, HAS_MASK, CHUNK, BLOCK_D,
    )  # fmt: skip
    offs_n = r * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    inside = (offs_n < N)[:, None] & dmask[None, :]
    v = _rows(V, b, h, offs_n, offs_d, svb, svh, svn, real[:, None] & dmask[None, :])
    g = _rows(GRAD, b, h, offs_n, offs_d, sgb, sgh, sgn, inside)
    state, z = _load_state(S, VEC, bh, r, n_chunks, BLOCK_D)
    _, scale, num, den = _chunk_forward(phi_q, phi_k, v, m, e_prev, state, z, eps, CHUNK, PRECISION)
    inv = 1.0 / den
    dnum = g * inv[:, None]
    dden = -tl.sum(g * num, axis=1) * inv * inv  # -(g . out) / den
    dw = (tl.dot(dnum, tl.trans(v), input_precision=PRECISION) + dden[:, None]) * _decay(m, CHUNK)
    dphi_q = tl.dot(dw, phi_k, input_precision=PRECISION)
    dphi_q += scale[:, None] * (tl.dot(dnum, tl.trans(state), input_precision=PRECISION)
                                + dden[:, None] * z[None, :])  # fmt: skip
    dq = tl.where(real[:, None], alpha * phi_q * dphi_q, 0.0)
    _store(DQ, b, h, offs_n, offs_d, sdb, sdh, sdn, dq, inside)
    rows_at = ROWS + (bh * n_chunks * CHUNK + offs_n) * 2
    tl.store(rows_at, inv, mask=offs_n < N)
    tl.store(rows_at + 1, dden, mask=offs_n < N)
    read = phi_q * scale[:, None]
    prog = bh * n_chunks + r
    tile = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    tl.store(
        W + prog * BLOCK_D * BLOCK_D + tile, tl.dot(tl.trans(read), dnum, input_precision=PRECISION)
    )
    tl.store(WZ + prog * BLOCK_D + offs_d, tl.sum(read * dden[:, None], axis=0))


@triton.jit
def suffix_scan_kernel(
    W, WZ, EP, G, GZ, n_chunks, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Rows [k0, k0 + BLOCK_K) of G_r = sum over later chunks' queries of exp(e_r - m_i)
    phi_q_i^T dO_i, from the last chunk down: G_{r-1} = W_r + exp(e_{r-1} - e_r) G_r."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    kb = tl.program_id(1)
    rows = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    cols = tl.arange(0, BLOCK_D)
    tile = rows[:, None] * BLOCK_D + cols[None, :]
    acc = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    accz = tl.zeros([BLOCK_K], dtype=tl.float32)
    for i in tl.range(0, n_chunks, num_stages=SCAN_STAGES):
        r = n_chunks - 1 - i
        prog = bh * n_chunks + r
        tl.store(G + prog * BLOCK_D * BLOCK_D + tile, acc)
        tl.store(GZ + prog * BLOCK_D + rows, accz)
        e_prev = tl.load(EP + bh * (n_chunks + 1) + r)
        e_end = tl.load(EP + bh * (n_chunks + 1) + r + 1)
        e_safe = tl.where(e_end > NEG_INF, e_end, 0.0)
        carry = tl.where(e_prev > NEG_INF, tl.exp(e_prev - e_safe), 0.0)
        acc = tl.load(W + prog * BLOCK_D * BLOCK_D + tile) + carry * acc
        accz = tl.load(WZ + prog * BLOCK_D + rows) + carry * accz


@triton.jit
def key_backward_kernel(
    Q, K, V, MASK, ALPHA, BETA, VEC, EP, GRAD, ROWS, G, GZ, DK, DV,
    headroom, H, N, d, n_chunks, ab_div,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn,
    sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, smb,
    HAS_MASK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dk, dv of chunk r: its own queries (intra) plus the later chunks' through G_r."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at long N and large B*H
    r = tl.program_id(1)
    b = bh // H
    h = bh % H
    alpha = tl.load(ALPHA + bh // ab_div)
    beta = tl.load(BETA + bh // ab_div)
    phi_q, phi_k, log_k, m, _, real = _features(
        Q, K, MASK, EP, VEC, b, h, bh, r, n_chunks, N, d, alpha, beta, headroom,
        sqb, sqh, sqn, skb, skh, skn, smb, HAS_MASK, CHUNK, BLOCK_D,
    )  # fmt: skip
    offs_n = r * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    inside = (offs_n < N)[:, None] & dmask[None, :]
    v = _rows(V, b, h, offs_n, offs_d, svb, svh, svn, real[:, None] & dmask[None, :])
    g = _rows(GRAD, b, h, offs_n, offs_d, sgb, sgh, sgn, inside)
    rows_at = ROWS + (bh * n_chunks * CHUNK + offs_n) * 2
    dnum = g * tl.load(rows_at, mask=offs_n < N, other=0.0)[:, None]
    dden = tl.load(rows_at + 1, mask=offs_n < N, other=0.0)
    decay = _decay(m, CHUNK)
    w = tl.dot(phi_q, tl.trans(phi_k), input_precision=PRECISION) * decay
    dw = (tl.dot(dnum, tl.trans(v), input_precision=PRECISION) + dden[:, None]) * decay
    dphi_k = tl.dot(tl.trans(dw), phi_q, input_precision=PRECISION)
    dv = tl.dot(tl.trans(w), dnum, input_precision=PRECISION)
    # later chunks: key j enters G_r in units of the chunk's end e_r, exp(log_k_j - e_r) <= 1
    e_end = tl.load(EP + bh * (n_chunks + 1) + r + 1)
    kk = tl.where(e_end > NEG_INF, tl.exp(log_k - tl.where(e_end > NEG_INF, e_end, 0.0)), 0.0)
    prog = bh * n_chunks + r
    tile = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    g_state = tl.load(G + prog * BLOCK_D * BLOCK_D + tile)
    g_z = tl.load(GZ + prog * BLOCK_D + offs_d)
    dv += tl.dot(kk, g_state, input_precision=PRECISION)
    inter = tl.dot(v, tl.trans(g_state), input_precision=PRECISION) + g_z[None, :]
    dk = beta * (phi_k * dphi_k + kk * inter)
    keep = real[:, None] & dmask[None, :]
    _store(DK, b, h, offs_n, offs_d, sdkb, sdkh, sdkn, tl.where(keep, dk, 0.0), inside)
    _store(DV, b, h, offs_n, offs_d, sdvb, sdvh, sdvn, tl.where(keep, dv, 0.0), inside)
