"""Triton kernels of the fused bidirectional LLN (launched by ``lln_ops``; do not import directly).

Tensors are (B, H, N, d) with unit stride on d. Every kernel runs on a (B*H, splits) grid: a
program covers one (b, h) and ``blocks_per_prog`` consecutive row tiles, so a d x d tile it needs
(state, gradient of the state) is loaded once per program, not once per tile. Features, states
and the normaliser are fp32 in registers whatever the input dtype. Padded rows (mask 0) are never
loaded: keys get phi_k = 0, queries are read as 0 (their outputs are finite, as on the torch
path), and every gradient of a padded row is written as 0.

Reductions over the rows finish inside the pass that produces them (no merge launch): each
program writes its partial to a workspace, then takes a ticket from a per-group counter; the
program that draws the last ticket merges all partials of its group in index order (so the
result does not depend on which program finished last: deterministic) and resets the counter to
0 for the next launch. The store-barrier-atomic (release) and atomic-barrier-load (acquire) order
is the one CUTLASS semaphores use.

Workspace layouts (fp32, BD = BLOCK_D): moment partials 8 per program (count, mean, M2 of q,
then of k, 2 unused); key state per (b, h) and per program ``[shift | z | S]`` (BD + BD + BD*BD);
state gradient ``[dz | dS]`` (BD + BD*BD).

``TRITON_INTERPRET=1`` must be set before this module is imported for the kernels to run on CPU
tensors (``triton.jit`` reads it when it decorates): ``INTERPRETED`` records which build this is.
"""

from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)
MOMENT_SLOTS = 8  # floats per program in the moment partials


@triton.jit
def _row_mask(MASK, b, offs, N, smb, HAS_MASK: tl.constexpr):
    inside = offs < N
    if HAS_MASK:
        inside = inside & (tl.load(MASK + b * smb + offs, mask=inside, other=0) != 0)
    return inside


@triton.jit
def _rows(split, i, blocks_per_prog, BLOCK: tl.constexpr):
    return (split * blocks_per_prog + i) * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def _load_rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, valid):
    """A (rows x D) tile of a (B, H, N, d) tensor as fp32, 0 where not ``valid`` (the batch
    offset in int64: B x H x N x d may pass 2^31 at long N)."""
    ptrs = X + b.to(tl.int64) * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    return tl.load(ptrs, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def _row_pair(X, Y, MASK, b, h, offs_n, offs_d, N, d, sxb, sxh, sxn, syb, syh, syn, smb,
              HAS_MASK: tl.constexpr):  # fmt: skip
    """Two (rows x D) tiles of the same rows (q and k, or k and v) as fp32, 0 outside the real
    rows and columns, and where those are."""
    real = _row_mask(MASK, b, offs_n, N, smb, HAS_MASK)
    valid = real[:, None] & (offs_d < d)[None, :]
    x = _load_rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, valid)
    return x, _load_rows(Y, b, h, offs_n, offs_d, syb, syh, syn, valid), valid


@triton.jit
def _store_rows(X, b, h, offs_n, offs_d, sxb, sxh, sxn, value, keep):
    ptrs = X + b.to(tl.int64) * sxb + h * sxh + offs_n[:, None] * sxn + offs_d[None, :]
    tl.store(ptrs, value.to(X.dtype.element_ty), mask=keep)


@triton.jit
def _tile(offs_d, BLOCK_D: tl.constexpr):
    return offs_d[:, None] * BLOCK_D + offs_d[None, :]


@triton.jit
def _last_ticket(COUNTER, slot, members):
    """True in the program that arrives last of ``members`` at ``COUNTER[slot]`` (its partial
    and everyone else's are then visible to it)."""
    tl.debug_barrier()  # every thread's partial is stored before the release below
    ticket = tl.atomic_add(COUNTER + slot, 1, sem="acq_rel")
    return ticket == members - 1


@triton.jit
def _reset(COUNTER, slot):
    tl.atomic_xchg(COUNTER + slot, 0, sem="relaxed")


# -- statistics --------------------------------------------------------------------------------


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
def _pool(cnt, mean, m2):
    """(count, mean, M2) of everything a vector of summaries covers (the parallel formula)."""
    total = tl.sum(cnt, axis=0)
    grand = tl.sum(cnt * mean, axis=0) / tl.maximum(total, 1.0)
    dev = mean - grand
    return total, grand, tl.sum(m2 + cnt * dev * dev, axis=0)


@triton.jit
def _summaries(P, first, start, members, BLOCK_P: tl.constexpr, SLOTS: tl.constexpr):
    """(count, mean, M2) of up to BLOCK_P program summaries from ``start`` (0 past the end)."""
    offs = start + tl.arange(0, BLOCK_P)
    live = offs < members
    ptr = P + offs * SLOTS + first
    cnt = tl.load(ptr, mask=live, other=0.0, cache_modifier=".cg")
    mean = tl.load(ptr + 1, mask=live, other=0.0, cache_modifier=".cg")
    return cnt, mean, tl.load(ptr + 2, mask=live, other=0.0, cache_modifier=".cg")


@triton.jit
def _pooled_std(P, first, members, BLOCK_P: tl.constexpr, SLOTS: tl.constexpr):
    """Unbiased std over ``members`` consecutive program summaries (count, mean, M2) starting at
    slot ``first``: grand mean in one sweep, M2 in a second (count - 1, clamped at 1)."""
    counts = tl.zeros([BLOCK_P], dtype=tl.float32)
    weighted = tl.zeros([BLOCK_P], dtype=tl.float32)
    for start in range(0, members, BLOCK_P):
        cnt, mean, _ = _summaries(P, first, start, members, BLOCK_P, SLOTS)
        counts += cnt
        weighted += cnt * mean
    total = tl.sum(counts, axis=0)
    grand = tl.sum(weighted, axis=0) / tl.maximum(total, 1.0)
    m2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for start in range(0, members, BLOCK_P):
        cnt, mean, part = _summaries(P, first, start, members, BLOCK_P, SLOTS)
        dev = mean - grand
        m2 += part + cnt * dev * dev
    return tl.sqrt(tl.sum(m2, axis=0) / tl.maximum(total - 1.0, 1.0))


@triton.jit
def moments_kernel(
    Q, K, MASK, PART, COUNTER, TEMPS, H, N, d, blocks_per_prog, members, n_groups,
    a, b, min_sigma, sqb, sqh, sqn, skb, skh, skn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, SLOTS: tl.constexpr,
):  # fmt: skip
    """Statistics and temperatures in one pass over q and k.

    Each program summarises its rows (per column, Chan's merge tile by tile; then pooled over
    the columns) into PART[program]; the last program of each statistics group (``members``
    consecutive programs: the scope's pooling) pools its group into sigma_q, sigma_k and the
    moment-matched alpha, beta, st of ``lln.symmetric_temperatures`` (st^2 = (sigma_q^2
    sigma_k^2 - b) / 2a, alpha = st / sigma_q, beta = st / sigma_k). TEMPS is (5, n_groups)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    bb = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    zeros = tl.zeros([BLOCK_D], dtype=tl.float32)
    cq, mq, vq = zeros, zeros, zeros
    ck, mk, vk = zeros, zeros, zeros
    for i in range(0, blocks_per_prog):
        offs_n = _rows(split, i, blocks_per_prog, BLOCK_N)
        xq, xk, valid = _row_pair(Q, K, MASK, bb, h, offs_n, offs_d, N, d, sqb, sqh, sqn, skb,
                                  skh, skn, smb, HAS_MASK)  # fmt: skip
        cq, mq, vq = _merge(cq, mq, vq, xq, valid)
        ck, mk, vk = _merge(ck, mk, vk, xk, valid)
    prog = bh * nsplit + split
    base = PART + prog * SLOTS
    cq_t, mq_t, vq_t = _pool(cq, mq, vq)
    ck_t, mk_t, vk_t = _pool(ck, mk, vk)
    tl.store(base, cq_t)
    tl.store(base + 1, mq_t)
    tl.store(base + 2, vq_t)
    tl.store(base + 3, ck_t)
    tl.store(base + 4, mk_t)
    tl.store(base + 5, vk_t)
    g = prog // members
    if _last_ticket(COUNTER, g, members):
        tl.debug_barrier()
        first = PART + g * members * SLOTS
        sq = tl.maximum(_pooled_std(first, 0, members, BLOCK_P, SLOTS), min_sigma)
        sk = tl.maximum(_pooled_std(first, 3, members, BLOCK_P, SLOTS), min_sigma)
        st = tl.sqrt(tl.maximum((sq * sq * sk * sk - b) / (2.0 * a), 1e-12))
        tl.store(TEMPS + g, sq)
        tl.store(TEMPS + n_groups + g, sk)
        tl.store(TEMPS + 2 * n_groups + g, st / sq)
        tl.store(TEMPS + 3 * n_groups + g, st / sk)
        tl.store(TEMPS + 4 * n_groups + g, st)
        _reset(COUNTER, g)


# -- forward -----------------------------------------------------------------------------------


@triton.jit
def _merge_key_states(PART, STATE, nsplit, BLOCK_D: tl.constexpr):
    """One (b, h): the per-feature shifts M_t = max of the partial maxima, and S, z = the
    partial states rescaled to them, row t by M_t (online softmax), summed in split order; a
    range of padding only (max -inf) weighs 0."""
    offs = tl.arange(0, BLOCK_D)
    tile = _tile(offs, BLOCK_D)
    stride = 2 * BLOCK_D + BLOCK_D * BLOCK_D
    m = tl.full([BLOCK_D], float("-inf"), dtype=tl.float32)
    for i in range(0, nsplit):
        m = tl.maximum(m, tl.load(PART + i * stride + offs, cache_modifier=".cg"))
    shift = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    z = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, nsplit):
        part = PART + i * stride
        w = tl.exp(tl.load(part + offs, cache_modifier=".cg") - shift)
        z += w * tl.load(part + BLOCK_D + offs, cache_modifier=".cg")
        acc += w[:, None] * tl.load(part + 2 * BLOCK_D + tile, cache_modifier=".cg")
    tl.store(STATE + offs, shift)
    tl.store(STATE + BLOCK_D + offs, z)
    tl.store(STATE + 2 * BLOCK_D + tile, acc)


@triton.jit
def kv_state_kernel(
    K, V, MASK, BETA, PART, COUNTER, STATE, H, N, d, blocks_per_prog, ab_div,
    skb, skh, skn, svb, svh, svn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Key state of one (b, h): each program sums its rows with its own running per-feature max
    shifts m_t (online rescaling of row t), S = sum_j exp(beta k_j - m) v_j^T (D x D),
    z = sum_j exp(beta k_j - m); the last program of the (b, h) merges them into STATE."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    b = bh // H
    h = bh % H
    beta = tl.load(BETA + bh // ab_div)
    offs_d = tl.arange(0, BLOCK_D)
    m_run = tl.full([BLOCK_D], float("-inf"), dtype=tl.float32)  # one per feature
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    z = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, blocks_per_prog):
        offs_n = _rows(split, i, blocks_per_prog, BLOCK_N)
        kk, vv, valid = _row_pair(K, V, MASK, b, h, offs_n, offs_d, N, d, skb, skh, skn, svb,
                                  svh, svn, smb, HAS_MASK)  # fmt: skip
        logit = tl.where(valid, kk * beta, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logit, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a range of padding only
        rescale = tl.exp(m_run - m_safe)
        phi = tl.where(valid, tl.exp(logit - m_safe[None, :]), 0.0)
        acc = acc * rescale[:, None] + tl.dot(tl.trans(phi), vv, input_precision=PRECISION)
        z = z * rescale + tl.sum(phi, axis=0)
        m_run = m_new
    stride = 2 * BLOCK_D + BLOCK_D * BLOCK_D
    part = PART + (bh * nsplit + split) * stride
    tl.store(part + offs_d, m_run)
    tl.store(part + BLOCK_D + offs_d, z)
    tl.store(part + 2 * BLOCK_D + _tile(offs_d, BLOCK_D), acc)
    if _last_ticket(COUNTER, bh, nsplit):
        tl.debug_barrier()
        _merge_key_states(PART + bh * nsplit * stride, STATE + bh * stride, nsplit, BLOCK_D)
        _reset(COUNTER, bh)


@triton.jit
def _load_key_state(STATE, bh, offs_d, BLOCK_D: tl.constexpr):
    """One (b, h)'s shifts M, normaliser z and (D x D) state S."""
    base = STATE + bh * (2 * BLOCK_D + BLOCK_D * BLOCK_D)
    shift = tl.load(base + offs_d)
    z = tl.load(base + BLOCK_D + offs_d)
    return shift, z, tl.load(base + 2 * BLOCK_D + _tile(offs_d, BLOCK_D))


@triton.jit
def _query_features(Q, MASK, shift, b, h, offs_m, offs_d, N, d, alpha, sqb, sqh, sqn, smb,
                    HAS_MASK: tl.constexpr):  # fmt: skip
    """phi_q = exp(alpha q + M - row max) on real columns (0 elsewhere), M the keys' per-feature
    maxima (the products phi_q . phi_k are unchanged, and each query's largest term is 1);
    padded rows read as q = 0."""
    real = _row_mask(MASK, b, offs_m, N, smb, HAS_MASK)
    dmask = offs_d < d
    valid = real[:, None] & dmask[None, :]
    qq = _load_rows(Q, b, h, offs_m, offs_d, sqb, sqh, sqn, valid)
    logit = tl.where(dmask[None, :], qq * alpha + shift[None, :], float("-inf"))
    row_max = tl.max(logit, axis=1)
    phi = tl.where(dmask[None, :], tl.exp(logit - row_max[:, None]), 0.0)
    return phi, valid


@triton.jit
def query_kernel(
    Q, MASK, ALPHA, STATE, OUT, eps, H, N, d, blocks_per_prog, ab_div,
    sqb, sqh, sqn, sob, soh, son, smb,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """out_i = phi_q_i S / (phi_q_i . z + eps) for a range of query tiles."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    alpha = tl.load(ALPHA + bh // ab_div)
    shift, zz, state = _load_key_state(STATE, bh, offs_d, BLOCK_D)
    for i in range(0, blocks_per_prog):
        offs_m = _rows(split, i, blocks_per_prog, BLOCK_M)
        phi, _ = _query_features(Q, MASK, shift, b, h, offs_m, offs_d, N, d, alpha, sqb, sqh,
                                 sqn, smb, HAS_MASK)  # fmt: skip
        num = tl.dot(phi, state, input_precision=PRECISION)
        den = tl.sum(phi * zz[None, :], axis=1) + eps
        keep = (offs_m[:, None] < N) & (offs_d[None, :] < d)
        _store_rows(OUT, b, h, offs_m, offs_d, sob, soh, son, num / den[:, None], keep)


# -- backward ----------------------------------------------------------------------------------


@triton.jit
def _sum_state_grads(PART, DSTATE, nsplit, BLOCK_D: tl.constexpr):
    """One (b, h)'s dz, dS: the programs' partials summed in split order."""
    offs = tl.arange(0, BLOCK_D)
    tile = _tile(offs, BLOCK_D)
    stride = BLOCK_D + BLOCK_D * BLOCK_D
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    dz = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, nsplit):
        dz += tl.load(PART + i * stride + offs, cache_modifier=".cg")
        acc += tl.load(PART + i * stride + BLOCK_D + tile, cache_modifier=".cg")
    tl.store(DSTATE + offs, dz)
    tl.store(DSTATE + BLOCK_D + tile, acc)


@triton.jit
def query_backward_kernel(
    Q, MASK, ALPHA, STATE, DO, DQ, PART, COUNTER, DSTATE, eps, H, N, d, blocks_per_prog, ab_div,
    sqb, sqh, sqn, sgb, sgh, sgn, sdb, sdh, sdn, smb,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dq for a range of query tiles, and dS = phi_q^T dnum, dz = phi_q^T dden (the last
    program of each (b, h) sums the partials into DSTATE).

    out = num / den with num = phi_q S, den = phi_q . z + eps; dnum = g / den,
    dden = -(g . num) / den^2, dphi_q = dnum S^T + dden z, dq = alpha phi_q dphi_q (shift
    detached). With gs = g S^T, g . num = phi_q . gs: one d x d product per tile instead of two.
    """
    bh = tl.program_id(0)
    split = tl.program_id(1)
    nsplit = tl.num_programs(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    alpha = tl.load(ALPHA + bh // ab_div)
    shift, zz, state = _load_key_state(STATE, bh, offs_d, BLOCK_D)
    acc_ds = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    acc_dz = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, blocks_per_prog):
        offs_m = _rows(split, i, blocks_per_prog, BLOCK_M)
        phi, valid = _query_features(Q, MASK, shift, b, h, offs_m, offs_d, N, d, alpha, sqb,
                                     sqh, sqn, smb, HAS_MASK)  # fmt: skip
        keep = (offs_m[:, None] < N) & dmask[None, :]
        g = _load_rows(DO, b, h, offs_m, offs_d, sgb, sgh, sgn, keep)
        gs = tl.dot(g, tl.trans(state), input_precision=PRECISION)
        inv_den = 1.0 / (tl.sum(phi * zz[None, :], axis=1) + eps)
        dden = -tl.sum(phi * gs, axis=1) * inv_den * inv_den
        dphi = gs * inv_den[:, None] + dden[:, None] * zz[None, :]
        dq = tl.where(valid, alpha * phi * dphi, 0.0)
        _store_rows(DQ, b, h, offs_m, offs_d, sdb, sdh, sdn, dq, keep)
        acc_ds += tl.dot(tl.trans(phi), g * inv_den[:, None], input_precision=PRECISION)
        acc_dz += tl.sum(phi * dden[:, None], axis=0)
    stride = BLOCK_D + BLOCK_D * BLOCK_D
    part = PART + (bh * nsplit + split) * stride
    tl.store(part + offs_d, acc_dz)
    tl.store(part + BLOCK_D + _tile(offs_d, BLOCK_D), acc_ds)
    if _last_ticket(COUNTER, bh, nsplit):
        tl.debug_barrier()
        _sum_state_grads(PART + bh * nsplit * stride, DSTATE + bh * stride, nsplit, BLOCK_D)
        _reset(COUNTER, bh)


@triton.jit
def key_backward_kernel(
    K, V, MASK, BETA, STATE, DSTATE, DK, DV, H, N, d, blocks_per_prog, ab_div,
    skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, smb,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dk = beta phi_k (v dS^T + dz), dv = phi_k dS for a range of key tiles (phi_k =
    exp(beta k - M), M the per-feature shifts)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    beta = tl.load(BETA + bh // ab_div)
    shift = tl.load(STATE + bh * (2 * BLOCK_D + BLOCK_D * BLOCK_D) + offs_d)
    grads = DSTATE + bh * (BLOCK_D + BLOCK_D * BLOCK_D)
    dz = tl.load(grads + offs_d)
    ds = tl.load(grads + BLOCK_D + _tile(offs_d, BLOCK_D))
    for i in range(0, blocks_per_prog):
        offs_n = _rows(split, i, blocks_per_prog, BLOCK_N)
        kk, vv, valid = _row_pair(K, V, MASK, b, h, offs_n, offs_d, N, d, skb, skh, skn, svb,
                                  svh, svn, smb, HAS_MASK)  # fmt: skip
        phi = tl.where(valid, tl.exp(kk * beta - shift[None, :]), 0.0)
        dphi = tl.dot(vv, tl.trans(ds), input_precision=PRECISION) + dz[None, :]
        dk = tl.where(valid, beta * phi * dphi, 0.0)
        dv = tl.dot(phi, ds, input_precision=PRECISION)
        keep = (offs_n[:, None] < N) & dmask[None, :]
        _store_rows(DK, b, h, offs_n, offs_d, sdb, sdh, sdn, dk, keep)  # DK and DV: one layout
        _store_rows(DV, b, h, offs_n, offs_d, sdb, sdh, sdn, dv, keep)
