"""Triton kernels of the fused bidirectional LLN (launched by ``triton_lln``; do not import directly).

Tensors are (B, H, N, d) with unit stride on d; a program covers one (b, h) and a range of rows.
Features, states and the normaliser are fp32 in registers whatever the input dtype. Padded rows
(mask 0) are never loaded: keys get phi_k = 0, queries are read as 0 (their outputs are finite,
as on the torch path), and every gradient of a padded row is written as 0.

``TRITON_INTERPRET=1`` must be set before this module is imported for the kernels to run on CPU
tensors (``triton.jit`` reads it when it decorates): ``INTERPRETED`` records which build this is.
"""

from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _row_mask(MASK, b, offs, N, smb, HAS_MASK: tl.constexpr):
    inside = offs < N
    if HAS_MASK:
        inside = inside & (tl.load(MASK + b * smb + offs, mask=inside, other=0) != 0)
    return inside


@triton.jit
def _load_rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, valid):
    """A (rows x D) tile of a (B, H, N, d) tensor as fp32, 0 where not ``valid``."""
    ptrs = X + b * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    return tl.load(ptrs, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, value, keep):
    ptrs = X + b * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    tl.store(ptrs, value.to(X.dtype.element_ty), mask=keep)


@triton.jit
def _load_state(S, Z, bh, offs_d, BLOCK_D: tl.constexpr):
    """One (b, h)'s (D x D) state and its D-vector."""
    state = tl.load(S + bh * BLOCK_D * BLOCK_D + offs_d[:, None] * BLOCK_D + offs_d[None, :])
    return state, tl.load(Z + bh * BLOCK_D + offs_d)


@triton.jit
def _merge_stats(cnt, mean, m2, cnt_b, mean_b, m2_b):
    """Chan's merge of two per-column (count, mean, M2) summaries."""
    total = cnt + cnt_b
    delta = mean_b - mean
    share = cnt_b / tl.maximum(total, 1.0)
    return total, mean + delta * share, m2 + m2_b + delta * delta * cnt * share


@triton.jit
def _merge(cnt, mean, m2, x, valid):
    """Merge one tile's per-column (count, mean, M2) into the running ones."""
    cnt_b = tl.sum(valid.to(tl.float32), axis=0)
    mean_b = tl.sum(tl.where(valid, x, 0.0), axis=0) / tl.maximum(cnt_b, 1.0)
    dev = tl.where(valid, x - mean_b[None, :], 0.0)
    return _merge_stats(cnt, mean, m2, cnt_b, mean_b, tl.sum(dev * dev, axis=0))


@triton.jit
def moments_kernel(
    Q, K, MASK, OUT, H, N, d, blocks_per_prog,
    sqb, sqh, sqn, skb, skh, skn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per-column (count, mean, M2) of the real rows of q and k: OUT[bh, split, 0|1, 3, D]."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    zeros = tl.zeros([BLOCK_D], dtype=tl.float32)
    cq, mq, vq = zeros, zeros, zeros
    ck, mk, vk = zeros, zeros, zeros
    for i in range(0, blocks_per_prog):
        offs_n = (split * blocks_per_prog + i) * BLOCK_N + tl.arange(0, BLOCK_N)
        real = _row_mask(MASK, b, offs_n, N, smb, HAS_MASK)
        valid = real[:, None] & dmask[None, :]
        xq = _load_rows(Q, b, h, offs_n, offs_d, sqb, sqh, sqn, valid)
        xk = _load_rows(K, b, h, offs_n, offs_d, skb, skh, skn, valid)
        cq, mq, vq = _merge(cq, mq, vq, xq, valid)
        ck, mk, vk = _merge(ck, mk, vk, xk, valid)
    base = OUT + (bh * nsplit + split) * 6 * BLOCK_D + offs_d
    tl.store(base, cq)
    tl.store(base + BLOCK_D, mq)
    tl.store(base + 2 * BLOCK_D, vq)
    tl.store(base + 3 * BLOCK_D, ck)
    tl.store(base + 4 * BLOCK_D, mk)
    tl.store(base + 5 * BLOCK_D, vk)


@triton.jit
def _column_std(cnt, mean, m2):
    """Unbiased std of everything the per-column summaries cover (count - 1, clamped at 1)."""
    total = tl.sum(cnt, axis=0)
    grand = tl.sum(cnt * mean, axis=0) / tl.maximum(total, 1.0)
    dev = mean - grand
    var = tl.sum(m2 + cnt * dev * dev, axis=0) / tl.maximum(total - 1.0, 1.0)
    return tl.sqrt(var)


@triton.jit
def temperatures_kernel(
    PART, OUT, members, n_groups, a, b, min_sigma, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per statistics group (the scope's pooling: 1, B or B*H groups of ``members`` partials):
    sigma_q, sigma_k and the moment-matched alpha, beta, st of ``lln.symmetric_temperatures``
    (st^2 = (sigma_q^2 sigma_k^2 - b) / 2a, alpha = st / sigma_q, beta = st / sigma_k).
    OUT is (5, n_groups): sigma_q, sigma_k, alpha, beta, st."""
    g = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    zeros = tl.zeros([BLOCK_D], dtype=tl.float32)
    cq, mq, vq = zeros, zeros, zeros
    ck, mk, vk = zeros, zeros, zeros
    for i in range(0, members):
        base = PART + (g * members + i) * 6 * BLOCK_D + offs
        cq, mq, vq = _merge_stats(cq, mq, vq, tl.load(base), tl.load(base + BLOCK_D),
                                  tl.load(base + 2 * BLOCK_D))  # fmt: skip
        ck, mk, vk = _merge_stats(ck, mk, vk, tl.load(base + 3 * BLOCK_D),
                                  tl.load(base + 4 * BLOCK_D), tl.load(base + 5 * BLOCK_D))  # fmt: skip
    sq = tl.maximum(_column_std(cq, mq, vq), min_sigma)
    sk = tl.maximum(_column_std(ck, mk, vk), min_sigma)
    st = tl.sqrt(tl.maximum((sq * sq * sk * sk - b) / (2.0 * a), 1e-12))
    tl.store(OUT + g, sq)
    tl.store(OUT + n_groups + g, sk)
    tl.store(OUT + 2 * n_groups + g, st / sq)
    tl.store(OUT + 3 * n_groups + g, st / sk)
    tl.store(OUT + 4 * n_groups + g, st)


@triton.jit
def merge_states_kernel(
    M_PART, S_PART, Z_PART, SHIFT, S, Z, nsplit, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One (b, h): the per-feature shifts M_t = max of the partial maxima, and S, z = the
    partial states rescaled to them, row t by M_t (online softmax); a range of padding only
    (max -inf) weighs 0."""
    bh = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_D], float("-inf"), dtype=tl.float32)
    for i in range(0, nsplit):
        m = tl.maximum(m, tl.load(M_PART + (bh * nsplit + i) * BLOCK_D + offs))
    shift = tl.where(m == float("-inf"), 0.0, m)
    tile = offs[:, None] * BLOCK_D + offs[None, :]
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    z = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, nsplit):
        prog = bh * nsplit + i
        w = tl.exp(tl.load(M_PART + prog * BLOCK_D + offs) - shift)
        acc += w[:, None] * tl.load(S_PART + prog * BLOCK_D * BLOCK_D + tile)
        z += w * tl.load(Z_PART + prog * BLOCK_D + offs)
    tl.store(SHIFT + bh * BLOCK_D + offs, shift)
    tl.store(S + bh * BLOCK_D * BLOCK_D + tile, acc)
    tl.store(Z + bh * BLOCK_D + offs, z)


@triton.jit
def kv_state_kernel(
    K, V, MASK, BETA, MAX_OUT, S_OUT, Z_OUT, H, N, d, blocks_per_prog, ab_div,
    skb, skh, skn, svb, svh, svn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Partial key state of a row range with its own running per-feature max shifts m_t (online
    rescaling of row t): S = sum_j exp(beta k_j - m) v_j^T (D x D), z = sum_j exp(beta k_j - m)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    b = bh // H
    h = bh % H
    beta = tl.load(BETA + bh // ab_div)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    m_run = tl.full([BLOCK_D], float("-inf"), dtype=tl.float32)  # one per feature
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    z = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, blocks_per_prog):
        offs_n = (split * blocks_per_prog + i) * BLOCK_N + tl.arange(0, BLOCK_N)
        real = _row_mask(MASK, b, offs_n, N, smb, HAS_MASK)
        valid = real[:, None] & dmask[None, :]
        kk = _load_rows(K, b, h, offs_n, offs_d, skb, skh, skn, valid)
        vv = _load_rows(V, b, h, offs_n, offs_d, svb, svh, svn, valid)
        logit = tl.where(valid, kk * beta, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logit, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a range of padding only
        rescale = tl.exp(m_run - m_safe)
        phi = tl.where(valid, tl.exp(logit - m_safe[None, :]), 0.0)
        acc = acc * rescale[:, None] + tl.dot(tl.trans(phi), vv, input_precision=PRECISION)
        z = z * rescale + tl.sum(phi, axis=0)
        m_run = m_new
    prog = bh * nsplit + split
    tl.store(MAX_OUT + prog * BLOCK_D + offs_d, m_run)
    tile = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    tl.store(S_OUT + prog * BLOCK_D * BLOCK_D + tile, acc)
    tl.store(Z_OUT + prog * BLOCK_D + offs_d, z)


@triton.jit
def _query_features(Q, MASK, SHIFT, bh, b, h, offs_m, offs_d, N, d, alpha, sqb, sqh, sqn, smb,
                    HAS_MASK: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """phi_q = exp(alpha q + M - row max) on real columns (0 elsewhere), M the keys' per-feature
    maxima (the products phi_q . phi_k are unchanged, and each query's largest term is 1);
    padded rows read as q = 0."""
    real = _row_mask(MASK, b, offs_m, N, smb, HAS_MASK)
    dmask = offs_d < d
    valid = real[:, None] & dmask[None, :]
    qq = _load_rows(Q, b, h, offs_m, offs_d, sqb, sqh, sqn, valid)
    shift = tl.load(SHIFT + bh * BLOCK_D + offs_d)
    logit = tl.where(dmask[None, :], qq * alpha + shift[None, :], float("-inf"))
    row_max = tl.max(logit, axis=1)
    phi = tl.where(dmask[None, :], tl.exp(logit - row_max[:, None]), 0.0)
    return phi, valid


@triton.jit
def query_kernel(
    Q, MASK, ALPHA, SHIFT, S, Z, OUT, eps, H, N, d, ab_div,
    sqb, sqh, sqn, sob, soh, son, smb,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """out_i = phi_q_i S / (phi_q_i . z + eps) for one block of queries."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    alpha = tl.load(ALPHA + bh // ab_div)
    phi, _ = _query_features(Q, MASK, SHIFT, bh, b, h, offs_m, offs_d, N, d, alpha, sqb, sqh, sqn,
                             smb, HAS_MASK, BLOCK_D)  # fmt: skip
    state, zz = _load_state(S, Z, bh, offs_d, BLOCK_D)
    num = tl.dot(phi, state, input_precision=PRECISION)
    den = tl.sum(phi * zz[None, :], axis=1) + eps
    out = num / den[:, None]
    keep = (offs_m[:, None] < N) & (offs_d[None, :] < d)
    _store_rows(OUT, b, h, offs_m, offs_d, sob, soh, son, out, keep)


@triton.jit
def query_backward_kernel(
    Q, MASK, ALPHA, SHIFT, S, Z, DO, DQ, DS_OUT, DZ_OUT, eps, H, N, d, blocks_per_prog, ab_div,
    sqb, sqh, sqn, sgb, sgh, sgn, sdb, sdh, sdn, smb,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dq for a row range, and its partial dS = phi_q^T dnum, dz = phi_q^T dden.

    out = num / den with num = phi_q S, den = phi_q . z + eps; dnum = g / den,
    dden = -(g . out) / den, dphi_q = dnum S^T + dden z, dq = alpha phi_q dphi_q (shift detached).
    """
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    alpha = tl.load(ALPHA + bh // ab_div)
    state, zz = _load_state(S, Z, bh, offs_d, BLOCK_D)
    acc_ds = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    acc_dz = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, blocks_per_prog):
        offs_m = (split * blocks_per_prog + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        phi, valid = _query_features(Q, MASK, SHIFT, bh, b, h, offs_m, offs_d, N, d, alpha, sqb,
                                     sqh, sqn, smb, HAS_MASK, BLOCK_D)  # fmt: skip
        keep = (offs_m[:, None] < N) & dmask[None, :]
        g = _load_rows(DO, b, h, offs_m, offs_d, sgb, sgh, sgn, keep)
        num = tl.dot(phi, state, input_precision=PRECISION)
        den = tl.sum(phi * zz[None, :], axis=1) + eps
        dnum = g / den[:, None]
        dden = -tl.sum(g * num, axis=1) / (den * den)
        dphi = (
            tl.dot(dnum, tl.trans(state), input_precision=PRECISION) + dden[:, None] * zz[None, :]
        )
        dq = tl.where(valid, alpha * phi * dphi, 0.0)
        _store_rows(DQ, b, h, offs_m, offs_d, sdb, sdh, sdn, dq, keep)
        acc_ds += tl.dot(tl.trans(phi), dnum, input_precision=PRECISION)
        acc_dz += tl.sum(phi * dden[:, None], axis=0)
    prog = bh * nsplit + split
    tile = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    tl.store(DS_OUT + prog * BLOCK_D * BLOCK_D + tile, acc_ds)
    tl.store(DZ_OUT + prog * BLOCK_D + offs_d, acc_dz)


@triton.jit
def key_backward_kernel(
    K, V, MASK, BETA, MAX, DS, DZ, DK, DV, H, N, d, ab_div,
    skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dk = beta phi_k (v dS^T + dz), dv = phi_k dS for one block of keys (phi_k = exp(beta k - M),
    M the per-feature shifts)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    beta = tl.load(BETA + bh // ab_div)
    shift = tl.load(MAX + bh * BLOCK_D + offs_d)
    real = _row_mask(MASK, b, offs_n, N, smb, HAS_MASK)
    valid = real[:, None] & dmask[None, :]
    kk = _load_rows(K, b, h, offs_n, offs_d, skb, skh, skn, valid)
    vv = _load_rows(V, b, h, offs_n, offs_d, svb, svh, svn, valid)
    phi = tl.where(valid, tl.exp(kk * beta - shift[None, :]), 0.0)
    ds, dz = _load_state(DS, DZ, bh, offs_d, BLOCK_D)
    dphi = tl.dot(vv, tl.trans(ds), input_precision=PRECISION) + dz[None, :]
    dk = tl.where(valid, beta * phi * dphi, 0.0)
    dv = tl.dot(phi, ds, input_precision=PRECISION)
    keep = (offs_n[:, None] < N) & dmask[None, :]
    _store_rows(DK, b, h, offs_n, offs_d, sdb, sdh, sdn, dk, keep)  # DK and DV: one layout
    _store_rows(DV, b, h, offs_n, offs_d, sdb, sdh, sdn, dv, keep)
