"""cosFormer: the linear right product against the dense left product (the official self-test)."""

from __future__ import annotations

import pytest
import torch
from helpers import check_padding, qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.reference import cosformer_matrix
from llnbench.errors import ConfigError
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
)

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def cosformer(causal: bool = False, d: int = 8, **options):
    return build_attention("cosformer", num_heads=2, head_dim=d, causal=causal, **options).eval()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("cos_m", ["real", "padded", 200], ids=["M-real", "M-padded", "M-fixed"])
@CAUSAL
def test_right_product_equals_left_product(n: int, cos_m: str | int, causal: bool) -> None:
    def left_product(attn, q, k, v, mask):
        return cosformer_matrix(q, k, mask, causal, 1e-6, cos_m) @ v

    check_forward(cosformer(causal, cos_m=cos_m, chunk=16), left_product, n=n)


@CAUSAL
def test_matrix_is_nonnegative_and_matches_forward(causal: bool) -> None:
    q, k, v = qkv(2, 2, 40, 8)
    q[0, 0, 3] = -1.0  # all-zero features: output 0 and a zero row
    p, out, mask = check_matrix(
        cosformer(causal), inputs=(q, k, v), lengths=(40, 21), nonnegative=True,
        zero_padded_columns=True,
    )  # fmt: skip
    assert torch.all(p[0, 0, 3] == 0) and torch.all(out[0, 0, 3] == 0)
    sums = p.sum(-1)[mask[:, None].expand(2, 2, 40)]
    assert torch.all((sums == 0) | ((sums - 1).abs() < 1e-12))  # all-zero rows aside, sum 1


@CAUSAL
def test_backward_matches_left_product(causal: bool) -> None:
    check_backward(
        cosformer(causal, chunk=5),
        lambda attn, q, k, v, m: cosformer_matrix(q, k, None, causal) @ v,
    )


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    q, k, v = qkv(1, 2, n, 4)
    q, k = (t.abs().add(0.1) for t in (q, k))  # away from ReLU's kink
    check_gradcheck(cosformer(causal, d=4, chunk=3), inputs=(q, k, v))


@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
@CAUSAL
def test_padding_invariance_with_real_length(causal: bool, junk: float) -> None:
    """M = n_b: padded and unpadded runs agree; the official M = N (``padded``) does not."""
    attn = cosformer(causal)
    check_padding(attn, d=8, junk=junk)
    q, k, v = qkv(2, 2, 30, 8)
    mask = right_padding_mask([30, 19], 30)
    clean = attn(q[1:, :, :19], k[1:, :, :19], v[1:, :, :19])
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
    check_causal_prefix(cosformer(True, chunk=8), prefixes=())  # M = n_b: no prefix property
    check_causal_prefix(cosformer(True, cos_m=64, chunk=8), future=None)


def test_cos_m_validation() -> None:
    with pytest.raises(ConfigError, match="allowed: real, padded"):
        cosformer(cos_m="max")
    with pytest.raises(ConfigError, match="positive"):
        cosformer(cos_m=0)
    q, k, v = qkv(1, 2, 9, 8)
    with pytest.raises(ValueError, match="shorter than the sequence"):
        cosformer(cos_m=8)(q, k, v)
