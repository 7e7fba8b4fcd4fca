"""The exactness checks llnbench applies to its own mechanisms, one function per property.

Each check builds seeded float64 inputs for the module it is given (``attn.num_heads`` heads of
``attn.head_dim``), uses the module in the mode it is in (call ``.eval()`` for a deterministic
path, ``.double()`` when it has parameters), and raises ``AssertionError`` naming the property and
the mismatch. A ``reference`` is ``reference(attn, q, k, v, attention_mask) -> out``: an
independent, naive float64 form of the mechanism (it may read the module's options, random
features or parameters); by default the module's own dense ``attention_matrix(q, k, mask) @ v``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError

from llnbench.testing.inputs import qkv, real_rows, right_padding_mask, with_junk_padding

Reference = Callable[[nn.Module, Tensor, Tensor, Tensor, "Tensor | None"], Tensor]
Inputs = tuple[Tensor, Tensor, Tensor]
INTERFACE = (
    "name", "causal", "supports_causal", "linear_in_n", "stochastic", "uses_attn_dropout",
    "complexity", "last_stats",
)  # fmt: skip


def matrix_reference(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None):
    """The module's dense matrix applied to v: what ``attention_matrix`` promises."""
    return attn.attention_matrix(q, k, mask) @ v


def assert_close(actual: Tensor, expected: Tensor, what: str, atol: float, rtol: float) -> None:
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, msg=lambda detail: f"{what}: {detail}"
    )


def _inputs(
    attn: nn.Module, b: int, n: int, scale: float = 1.0, seed: int = 0, dtype=torch.float64
) -> Inputs:
    return qkv(b, attn.num_heads, n, attn.head_dim, dtype=dtype, scale=scale, seed=seed)


def check_forward(
    attn: nn.Module,
    reference: Reference = matrix_reference,
    *,
    n: int = 17,
    lengths: Sequence[int] | None = None,
    junk: float | None = 1e4,
    masked: bool = True,
    unmasked: bool = True,
    scale: float = 1.0,
    seed: int = 0,
    atol: float = 1e-10,
    rtol: float = 0.0,
) -> Tensor | None:
    """Forward equals the reference in float64: with right padding (``lengths``, default
    ``(n, n - 3)``) whose slots hold ``junk``, on the real rows; and without a mask.
    Returns the masked output."""
    lengths = tuple(lengths or (n, max(1, n - 3)))
    q, k, v = _inputs(attn, len(lengths), n, scale, seed)
    out = None
    if masked:
        mask = right_padding_mask(lengths, n)
        given = (
            (q, k, v)
            if junk is None
            else tuple(with_junk_padding(t, mask, junk) for t in (q, k, v))
        )
        out = attn(*given, mask)
        ref = reference(attn, q, k, v, mask)
        where = real_rows(mask, out)
        assert_close(out[where], ref[real_rows(mask, ref)], f"forward vs reference (N={n}, "
                     f"lengths {list(lengths)}, junk padding {junk})", atol, rtol)  # fmt: skip
    if unmasked:
        assert_close(
            attn(q, k, v), reference(attn, q, k, v, None), f"forward vs reference (N={n}, no mask)",
            atol, rtol,
        )  # fmt: skip
    return out


def check_backward(
    attn: nn.Module,
    reference: Reference = matrix_reference,
    *,
    n: int = 23,
    batch: int = 1,
    seed: int = 0,
    atol: float = 1e-9,
    rtol: float = 1e-9,
) -> None:
    """Gradients of ``sum(out**2)`` with respect to q, k and v equal the reference's (float64)."""
    q, k, v = (t.requires_grad_() for t in _inputs(attn, batch, n, seed=seed))
    grads = _grads(attn(q, k, v), (q, k, v))
    ref_grads = _grads(reference(attn, q, k, v, None), (q, k, v))
    for name, grad, ref in zip("qkv", grads, ref_grads):
        assert_close(grad, ref, f"backward: gradient for {name} vs reference (N={n})", atol, rtol)


def _grads(out: Tensor, inputs: Inputs) -> list[Tensor]:
    grads = torch.autograd.grad(out.square().sum(), inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def check_matrix(
    attn: nn.Module,
    *,
    n: int = 40,
    lengths: Sequence[int] | None = None,
    masked: bool = True,
    inputs: Inputs | None = None,
    scale: float = 1.0,
    seed: int = 0,
    in_training: bool = False,
    row_sums: float | None = None,
    nonnegative: bool = False,
    zero_padded_columns: bool = False,
    atol: float = 1e-10,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``attention_matrix(q, k, mask) @ v`` equals the forward on real rows (padding ``lengths``,
    default ``(n, n // 2 + 1)``). ``in_training``: the matrix is taken in training mode (a
    stochastic mechanism's matrix is its eval path in either mode). Optionally: real rows sum to
    1 within ``row_sums``, entries >= 0, padded key columns exactly 0. Returns (P, out, mask)."""
    lengths = tuple(lengths or (n, n // 2 + 1))
    q, k, v = inputs if inputs is not None else _inputs(attn, len(lengths), n, scale, seed)
    b, h, n = q.shape[:3]
    mask = right_padding_mask(lengths, n) if masked else None
    out = attn(q, k, v, mask)
    mode = attn.training
    if in_training:
        attn.train()
    try:
        p = attn.attention_matrix(q, k, mask)
    finally:
        attn.train(mode)
    real = slice(None) if mask is None else real_rows(mask, out)
    assert_close((p @ v)[real], out[real], f"attention_matrix @ v vs forward (N={n})", atol, 0.0)
    if row_sums is not None:
        rows = torch.ones(b, h, n, dtype=torch.bool) if mask is None else mask[:, None]
        sums = p.sum(-1)[rows.expand(b, h, n)]
        assert_close(sums, torch.ones_like(sums), "rows of attention_matrix sum to 1", row_sums, 0)
    if nonnegative:
        assert torch.all(p >= 0), f"attention_matrix has negative entries (min {p.min().item()})"
    if zero_padded_columns and mask is not None:
        for i, length in enumerate(lengths):
            assert torch.all(p[i, :, :, length:] == 0), "padded key columns of P are not zero"
    return p, out, mask


def check_padding(
    attn: nn.Module,
    *,
    d: int | None = None,
    lengths: tuple[int, int] = (30, 19),
    junk: float = 1e4,
    compare: bool = True,
) -> None:
    """Junk padding (even inf/NaN) plus the mask: outputs finite; real rows equal the unpadded run
    (``compare``, for deterministic mechanisms); gradients finite, and zero on padded positions."""
    n, n_b = lengths[0], lengths[1]
    q, k, v = (t.requires_grad_() for t in qkv(2, attn.num_heads, n, d or attn.head_dim))
    mask = right_padding_mask(list(lengths), n)
    out = attn(*(_junk_with_gradient(t, mask, junk) for t in (q, k, v)), mask)
    assert torch.isfinite(out).all(), f"non-finite output with junk padding {junk}"
    if compare:
        clean = attn(q[1:, :, :n_b], k[1:, :, :n_b], v[1:, :, :n_b])
        assert_close(out[1:, :, :n_b], clean, f"junk padding ({junk}) vs unpadded", 1e-10, 0)
    out[real_rows(mask, out)].sum().backward()
    pad = ~mask[:, None, :, None]
    for name, t in zip("qkv", (q, k, v)):
        assert torch.isfinite(t.grad).all(), f"non-finite gradient for {name} (junk {junk})"
        assert torch.all(t.grad.masked_select(pad) == 0), f"padded {name} receives gradient"


def _junk_with_gradient(x: Tensor, mask: Tensor, junk: float) -> Tensor:
    """``junk`` in the padded slots, still connected to x in the graph (masked_fill is not):
    a mechanism that lets padding reach its output then shows up as gradient on padded x."""
    pad = ~mask[:, None, :, None]
    return torch.where(pad, x + (torch.full_like(x, junk) - x).detach(), x)


def check_causal_prefix(
    attn: nn.Module,
    *,
    n: int = 50,
    prefixes: Sequence[int] = (1, 17, 49),
    future_from: int = 30,
    future: tuple[float | None, float | None, float | None] | None = (500.0, 500.0, 500.0),
    atol: float = 1e-12,
) -> Tensor:
    """Strict causality: ``attn(x)[:t] == attn(x[:t])`` for each prefix t, and outputs before
    ``future_from`` ignore (q, k, v) there set to ``future`` (None: left as is) by every path
    (statistics, maxima, normalisers). Returns the full output."""
    q, k, v = _inputs(attn, 1, n)
    full = attn(q, k, v)
    for t in prefixes:
        got = attn(q[:, :, :t], k[:, :, :t], v[:, :, :t])
        assert_close(got, full[:, :, :t], f"causal prefix: output on the first {t} tokens", atol, 0)
    if future is not None:
        evil = [x.clone() for x in (q, k, v)]
        for x, value in zip(evil, future):
            if value is not None:
                x[:, :, future_from:] = value
        assert_close(attn(*evil)[:, :, :future_from], full[:, :, :future_from],
                     f"causal: tokens from {future_from} on, set to {future}, changed earlier "
                     "outputs", atol, 0)  # fmt: skip
    return full


def check_batch_independence(
    attn: nn.Module,
    *,
    n: int = 17,
    lengths: Sequence[int] = (17, 11, 5),
    atol: float = 1e-12,
) -> None:
    """Each sequence's output is the same in a batch as alone (same padding), with and without
    masks: no statistic is pooled across the batch."""
    q, k, v = _inputs(attn, len(lengths), n)
    mask = right_padding_mask(lengths, n)
    for given in (mask, None):
        out = attn(q, k, v, given)
        for b in range(len(lengths)):
            one = None if given is None else given[b : b + 1]
            alone = attn(q[b : b + 1], k[b : b + 1], v[b : b + 1], one)
            real = slice(None) if one is None else real_rows(one, alone)
            what = f"batch independence: sequence {b} in a batch vs alone" + (
                "" if given is None else " (padded)"
            )
            assert_close(out[b : b + 1][real], alone[real], what, atol, 0)


def check_gradcheck(
    attn: nn.Module, *, n: int = 5, inputs: Inputs | None = None, masked: bool = True
) -> None:
    """``torch.autograd.gradcheck`` in float64 (B=1), with the last token padded (``masked``) and
    the real outputs checked. Use a deterministic module (eval, fixed random features)."""
    q, k, v = inputs if inputs is not None else _inputs(attn, 1, n)
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    n = q.shape[2]
    mask = torch.tensor([[True] * (n - 1) + [False]]) if masked else None

    def real_output(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attn(q, k, v, mask)[:, :, : n - 1] if masked else attn(q, k, v)

    try:
        torch.autograd.gradcheck(real_output, (q, k, v))
    except GradcheckError as err:
        first = str(err).strip().splitlines()[0]
        raise AssertionError(f"gradcheck (float64, N={n}): {first}") from err


def check_interface(
    attn: nn.Module,
    *,
    n: int = 70,
    lengths: tuple[int, int] = (70, 50),
    bf16: bool = True,
    matrix: bool = True,
    device: torch.device | str = "cpu",
) -> None:
    """The interface and dtype policy: the class attributes exist; fp32 in, fp32 out of q's
    shape, finite, with finite gradients; bf16 under autocast gives finite bf16 (``bf16``); the
    dense matrix has shape (B, H, N, N) (``matrix``). With ``n=8, bf16=False, matrix=False`` it is
    the cheap check every job runs on a mechanism from outside llnbench before any other work."""
    for flag in INTERFACE:
        assert hasattr(attn, flag), f"{type(attn).__name__} has no attribute {flag!r}"
    q, k, v = (t.to(device).requires_grad_() for t in _inputs(attn, 2, n, dtype=torch.float32))
    mask = right_padding_mask(list(lengths), n).to(device)
    out = attn(q, k, v, mask)
    expected = f"expected (B, H, N, d) = {tuple(q.shape)} float32"
    assert isinstance(out, Tensor), f"forward returned {_what(out)}; {expected}"
    assert out.shape == q.shape and out.dtype == torch.float32, (
        f"forward returned {tuple(out.shape)} {str(out.dtype).removeprefix('torch.')} for "
        f"float32 inputs; {expected}"
    )
    assert torch.isfinite(out).all(), "non-finite fp32 output (NaN or inf) on Gaussian inputs"
    out.sum().backward()
    assert all(t.grad is not None for t in (q, k, v)), "no gradient reaches q, k or v"
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v)), "non-finite fp32 gradients"
    if bf16:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            out16 = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
        assert out16.dtype == torch.bfloat16, f"bf16 inputs under autocast gave {out16.dtype}"
        assert torch.isfinite(out16.float()).all(), "non-finite bf16 output"
    if not matrix:
        return
    mode = attn.training
    attn.eval()
    try:
        p = attn.attention_matrix(q.detach(), k.detach(), mask)
    finally:
        attn.train(mode)
    assert p.shape == (2, q.shape[1], n, n), f"attention_matrix has shape {tuple(p.shape)}"


def _what(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"
