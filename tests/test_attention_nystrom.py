"""Nyströmformer against its dense float64 form on each sequence's real tokens, pinv and conv."""

from __future__ import annotations

import pytest
import torch
from helpers import check_padding, qkv, real_rows, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.nystrom import newton_schulz_pinv
from llnbench.attention.reference import nystrom_matrix, softmax_matrix
from llnbench.errors import ConfigError
from llnbench.testing import check_backward, check_forward, check_gradcheck, check_matrix


def nystrom(d: int = 8, **options):
    options.setdefault("conv_kernel", 0)
    return build_attention("nystrom", num_heads=2, head_dim=d, **options).double().eval()


@pytest.mark.parametrize("n", [5, 17], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_landmarks_at_every_token_with_exact_pinv_is_softmax(n: int, masked: bool) -> None:
    q, k, v = qkv(2, 2, n, 8)
    mask = right_padding_mask([n, n - 2], n) if masked else torch.ones(2, n, dtype=torch.bool)
    out = nystrom(num_landmarks=n, pinv_iters=0)(q, k, v, mask)
    ref = softmax_matrix(q, k, mask) @ v
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-8, rtol=0
    )


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("iters", [0, 6], ids=["exact-pinv", "6-iters"])
def test_float64_matches_dense_form(n: int, iters: int) -> None:
    """Real tokens only in the reference: the fast path's inert empty slots must change nothing."""
    lengths = (n, max(1, n - 12))  # the second sequence often has n_b < m
    attn = nystrom(num_landmarks=8, pinv_iters=iters)

    def dense(attn, q, k, v, mask):
        return nystrom_matrix(q, k, 8, mask, iters) @ v

    check_forward(attn, dense, n=n, lengths=lengths, unmasked=False)
    p, _, mask = check_matrix(attn, n=n, lengths=lengths)
    q, k, _ = qkv(2, 2, n, 8)
    p_ref = nystrom_matrix(q, k, 8, mask, iters)
    real = mask[:, None, :, None].expand_as(p)
    torch.testing.assert_close(p[real], p_ref[real], atol=1e-10, rtol=0)


def test_backward_matches_dense_form() -> None:
    check_backward(
        nystrom(num_landmarks=5), lambda attn, q, k, v, m: nystrom_matrix(q, k, 5, None, 6) @ v
    )


def test_value_conv_is_a_depthwise_conv_over_zero_padded_v() -> None:
    q, k, v = qkv(2, 2, 20, 8)
    mask = right_padding_mask([20, 13], 20)
    attn = nystrom(num_landmarks=4, conv_kernel=5)
    extra = attn(q, k, v, mask) - attn.attention_matrix(q, k, mask) @ v
    weight = attn.conv.weight[:, 0, :, 0]  # (H, 5)
    v0 = v.masked_fill(~mask[:, None, :, None], 0.0)
    ref = torch.zeros_like(v)
    for n in range(20):
        for t in range(5):
            src = n + t - 2
            if 0 <= src < 20:
                ref[:, :, n] += weight[None, :, t, None] * v0[:, :, src]
    real = real_rows(mask, ref)
    torch.testing.assert_close(extra[real], ref[real], atol=1e-10, rtol=0)


def test_newton_schulz_converges_to_pinv() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.softmax(3 * torch.eye(6) + 0.5 * torch.randn(2, 3, 6, 6, generator=gen), -1).double()
    torch.testing.assert_close(newton_schulz_pinv(a, 30), torch.linalg.pinv(a), atol=1e-6, rtol=0)
    q, k, v = qkv(2, 2, 12, 8, scale=2.0)
    k = q + 0.1 * k  # peaked, well-conditioned A
    exact = nystrom(num_landmarks=6, pinv_iters=0)(q, k, v)
    torch.testing.assert_close(
        nystrom(num_landmarks=6, pinv_iters=30)(q, k, v), exact, atol=1e-6, rtol=0
    )


def test_rows_sum_to_one_within_pinv_error() -> None:
    """Default method (6 iterations, 64 landmarks) at head dim 64 on unit-variance inputs."""
    q, k, _ = qkv(2, 2, 256, 64)
    mask = right_padding_mask([256, 150], 256)
    attn = nystrom(d=64)
    p = attn.attention_matrix(q, k, mask)
    sums = p.sum(-1)[mask[:, None].expand(2, 2, 256)]
    assert (sums - 1).abs().max() < 1e-2
    assert torch.all(p[1, :, :, 150:] == 0)
    attn(q, k, q, mask)
    assert attn.last_stats["pinv_residual"] < 1e-2


@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
@pytest.mark.parametrize("lengths", [[30, 19], [30, 5]], ids=["nb>m", "nb<m"])
def test_padding_invariance_and_finite_gradients(lengths: list[int], junk: float) -> None:
    attn = nystrom(num_landmarks=8, conv_kernel=5)
    check_padding(attn, d=8, lengths=tuple(lengths), junk=junk)


@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(n: int) -> None:
    check_gradcheck(nystrom(d=4, num_landmarks=3, conv_kernel=3), n=n)


def test_option_validation() -> None:
    with pytest.raises(ConfigError, match="odd"):
        nystrom(conv_kernel=4)
    with pytest.raises(ConfigError, match="non-negative"):
        nystrom(pinv_iters=-1)
    with pytest.raises(ConfigError, match="no causal form"):
        build_attention("nystrom", num_heads=2, head_dim=8, causal=True)
