"""cosFormer: the linear right product against the dense left product (the official self-test)."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, real_rows, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.reference import cosformer_matrix
from llnbench.errors import ConfigError

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def cosformer(causal: bool = False, d: int = 8, **options):
    return build_attention("cosformer", num_heads=2, head_dim=d, causal=causal, **options).eval()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("cos_m", ["real", "padded", 200], ids=["M-real", "M-padded", "M-fixed"])
@CAUSAL
def test_right_product_equals_left_product(n: int, cos_m: str | int, causal: bool) -> None:
    q, k, v = qkv(2, 2, n, 8)
    mask = right_padding_mask([n, max(1, n - 3)], n)
    attn = cosformer(causal, cos_m=cos_m, chunk=16)
    out = attn(*(with_junk_padding(t, mask) for t in (q, k, v)), mask)
    ref = cosformer_matrix(q, k, mask, causal, 1e-6, cos_m) @ v
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    plain = cosformer_matrix(q, k, None, causal, 1e-6, cos_m) @ v
    torch.testing.assert_close(attn(q, k, v), plain, atol=1e-10, rtol=0)


@CAUSAL
def test_matrix_is_nonnegative_and_matches_forward(causal: bool) -> None:
    q, k, v = qkv(2, 2, 40, 8)
    q[0, 0, 3] = -1.0  # all-zero features: output 0 and a zero row
    mask = right_padding_mask([40, 21], 40)
    attn = cosformer(causal)
    out = attn(q, k, v, mask)
    p = attn.attention_matrix(q, k, mask)
    assert torch.all(p >= 0) and torch.all(p[1, :, :, 21:] == 0)
    assert torch.all(p[0, 0, 3] == 0) and torch.all(out[0, 0, 3] == 0)
    real = real_rows(mask, out)
    torch.testing.assert_close((p @ v)[real], out[real], atol=1e-10, rtol=0)
    sums = p.sum(-1)[mask[:, None].expand(2, 2, 40)]
    assert torch.all((sums == 0) | ((sums - 1).abs() < 1e-12))  # all-zero rows aside, sum 1


@CAUSAL
def test_backward_matches_left_product(causal: bool) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 23, 8))
    out = cosformer(causal, chunk=5)(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = cosformer_matrix(q, k, None, causal) @ v
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-9)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, n, 4))
    q, k = (t.detach().abs().add(0.1).requires_grad_() for t in (q, k))  # away from ReLU's kink
    attn = cosformer(causal, d=4, chunk=3)
    mask = torch.tensor([[True] * (n - 1) + [False]])
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask)[:, :, : n - 1], (q, k, v))


@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
@CAUSAL
def test_padding_invariance_with_real_length(causal: bool, junk: float) -> None:
    """M = n_b: padded and unpadded runs agree; the official M = N (``padded``) does not."""
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, 30, 8))
    mask = right_padding_mask([30, 19], 30)
    attn = cosformer(causal)
    out = attn(*(with_junk_padding(t, mask, junk) for t in (q, k, v)), mask)
    assert torch.isfinite(out).all()
    clean = attn(q[1:, :, :19], k[1:, :, :19], v[1:, :, :19])
    torch.testing.assert_close(out[1:, :, :19], clean, atol=1e-10, rtol=0)
    out[real_rows(mask, out)].sum().backward()
    pad = ~mask[:, None, :, None]
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and torch.all(t.grad.masked_select(pad) == 0)
    padded = cosformer(causal, cos_m="padded")(q, k, v, mask)
    assert (padded[1:, :, :19] - clean).abs().max() > 1e-4


def test_left_padding_uses_positions_among_real_tokens() -> None:
    q, k, v = qkv(1, 2, 9, 4)
    mask = torch.tensor([[False] * 3 + [True] * 6])
    attn = cosformer(False, d=4)
    out = attn(q, k, v, mask)
    torch.testing.assert_close(
        out[:, :, 3:], attn(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:]), atol=1e-12, rtol=0
    )
    assert torch.isfinite(cosformer(True, d=4)(q, k, v, mask)).all()


def test_causal_ignores_future_content_and_fixed_m_gives_prefixes() -> None:
    q, k, v = qkv(1, 2, 50, 8)
    attn = cosformer(True, chunk=8)
    full = attn(q, k, v)
    evil = [x.clone() for x in (q, k, v)]
    for x in evil:
        x[:, :, 30:] = 500.0
    torch.testing.assert_close(attn(*evil)[:, :, :30], full[:, :, :30], atol=1e-12, rtol=0)
    fixed = cosformer(True, cos_m=64, chunk=8)
    full = fixed(q, k, v)
    for t in (1, 17, 49):
        torch.testing.assert_close(
            fixed(q[:, :, :t], k[:, :, :t], v[:, :, :t]), full[:, :, :t], atol=1e-12, rtol=0
        )


def test_cos_m_validation() -> None:
    with pytest.raises(ConfigError, match="allowed: real, padded"):
        cosformer(cos_m="max")
    with pytest.raises(ConfigError, match="positive"):
        cosformer(cos_m=0)
    q, k, v = qkv(1, 2, 9, 8)
    with pytest.raises(ValueError, match="shorter than the sequence"):
        cosformer(cos_m=8)(q, k, v)
