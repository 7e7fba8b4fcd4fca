"""Performer FAVOR+: exact against the dense form with the same W, unbiased features, redraw rules."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_padding, qkv

from llnbench.attention import build_attention
from llnbench.attention.performer import draw_projection, favor_log_features
from llnbench.attention.reference import favor_features, feature_matrix, softmax_matrix
from llnbench.errors import ConfigError
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
)

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def performer(causal: bool = False, d: int = 8, **options):
    options.setdefault("eps", 0.0)
    return build_attention("performer", num_heads=2, head_dim=d, causal=causal, **options).eval()


def reference(w, q, k, v, mask=None, causal=False):
    return feature_matrix(favor_features(q, w), favor_features(k, w), mask, causal) @ v.double()


def same_w_reference(attn, q, k, v, mask):
    """The dense form with the module's own (eval) random features."""
    return reference(attn.eval_projection, q, k, v, mask, attn.causal)


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 64], ids=lambda d: f"d{d}")
@CAUSAL
def test_float64_matches_dense_form_with_same_w(n: int, d: int, causal: bool) -> None:
    check_forward(performer(causal, d, nb_features=24, chunk=16), same_w_reference, n=n)


@CAUSAL
def test_training_uses_a_fresh_draw_from_the_default_generator(causal: bool) -> None:
    q, k, v = qkv(1, 2, 20, 8)
    attn = performer(causal, nb_features=12).train()
    torch.manual_seed(5)
    out = attn(q, k, v)
    torch.manual_seed(5)
    w = draw_projection(2, 12, 8)
    torch.testing.assert_close(out, reference(w, q, k, v, None, causal), atol=1e-10, rtol=0)
    assert not torch.allclose(attn(q, k, v), out)  # redrawn every step


@CAUSAL
def test_backward_matches_dense_form(causal: bool) -> None:
    check_backward(performer(causal, nb_features=16, chunk=5), same_w_reference)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    check_gradcheck(performer(causal, d=4, nb_features=6, chunk=3), n=n)


@CAUSAL
@pytest.mark.parametrize("feature_eps", [0.0, 1e-3], ids=["feps0", "feps1e-3"])
def test_matrix_times_v_equals_forward(causal: bool, feature_eps: float) -> None:
    # in_training: the matrix is the eval path in either mode
    check_matrix(
        performer(causal, eps=1e-6, feature_eps=feature_eps), lengths=(40, 21), scale=2.0,
        in_training=True, nonnegative=True, zero_padded_columns=True,
    )  # fmt: skip


def test_eval_causal_is_strictly_causal() -> None:
    """The key stabiliser is a prefix maximum: a huge future key cannot shrink earlier features."""
    attn = performer(True, eps=1e-6, chunk=8)
    full = check_causal_prefix(attn, future=None)
    q, k, v = qkv(1, 2, 50, 8)
    # future keys at the argmax of the log-features (k~ = the longest row of W): a global shift
    # would divide every earlier key by exp(gap) and let eps move the outputs
    w = attn.eval_projection.double()
    best = w[torch.arange(2), w.norm(dim=-1).argmax(-1)]  # (H, d)
    k_evil = k.clone()
    k_evil[0, :, 30:] = best[:, None, :] * 8**0.25
    log_k = favor_log_features(k_evil, w).amax(-1)[0]  # (H, N)
    assert torch.all(log_k[:, 30:].amin(-1) - log_k[:, :30].amax(-1) > 3)
    torch.testing.assert_close(attn(q, k_evil, v)[:, :, :30], full[:, :, :30], atol=1e-12, rtol=0)


@CAUSAL
@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float) -> None:
    check_padding(performer(causal, eps=1e-6), d=8, junk=junk)


def test_features_are_unbiased() -> None:
    """E_W[phi(x).phi(y)] = exp(x.y / sqrt(d)) for iid Gaussian W (m = 65536, unshifted)."""
    d, m = 4, 65536
    w = draw_projection(1, m, d, orthogonal=False, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x, y = (0.7 * torch.randn(1, 1, 8, d, generator=gen, dtype=torch.float64) for _ in range(2))
    products = torch.exp(favor_log_features(x, w) + favor_log_features(y, w))  # m phi(x)_r phi(y)_r
    z = (products.mean(-1) - torch.exp((x * y).sum(-1) / math.sqrt(d))) / (
        products.std(-1) / math.sqrt(m)
    )
    assert z.abs().max() < 5, z


def test_error_vs_softmax_shrinks_with_more_features() -> None:
    errors = {}
    for m in (64, 4096):
        total = 0.0
        for seed in range(3):
            torch.manual_seed(seed)
            attn = performer(d=16, nb_features=m)
            q, k, v = qkv(1, 2, 32, 16, scale=0.5, seed=10 + seed)
            total += (attn(q, k, v) - softmax_matrix(q, k) @ v).abs().mean().item()
        errors[m] = total / 3
    assert errors[4096] < 0.4 * errors[64], errors


def test_orthogonal_blocks_and_row_norms() -> None:
    w = draw_projection(3, 20, 8, dtype=torch.float64)  # blocks of 8, 8 and 4 rows
    for block in (w[:, :8], w[:, 8:16], w[:, 16:]):
        gram = block @ block.transpose(-1, -2)
        off = gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
        assert off.abs().max() < 1e-10
    assert not torch.allclose(w[0], w[1])  # independent per head


def test_redraw_schedules_and_state_dict() -> None:
    q, k, v = qkv(1, 2, 16, 8)
    step = performer(redraw="step").train()
    assert not torch.allclose(step(q, k, v), step(q, k, v))
    step.eval()
    torch.testing.assert_close(step(q, k, v), step(q, k, v), atol=0, rtol=0)
    torch.testing.assert_close(
        step(q, k, v), reference(step.eval_projection, q, k, v), atol=1e-10, rtol=0
    )

    interval = performer(redraw="interval:3").train()
    outs = [interval(q, k, v) for _ in range(4)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    assert not torch.allclose(outs[2], outs[3])

    fixed = performer(redraw="fixed")
    torch.testing.assert_close(fixed.train()(q, k, v), fixed.eval()(q, k, v), atol=0, rtol=0)

    state = step.state_dict()
    assert set(state) == {"eval_projection"}
    clone = performer(redraw="step")
    clone.load_state_dict(state)
    torch.testing.assert_close(clone(q, k, v), step(q, k, v), atol=0, rtol=0)

    with pytest.raises(ConfigError, match="allowed: step, fixed, interval:K"):
        performer(redraw="interval:0")
