"""Randomized attention: exact against its dense float64 form, and unbiased for softmax (paper noise)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_padding, qkv, real_rows, right_padding_mask

from llnbench.attention import build_attention, ra
from llnbench.attention.reference import ra_matrix, ra_mean_samples, softmax_matrix
from llnbench.errors import ConfigError
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
)

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def randomized(causal: bool = False, d: int = 8, **options):
    return build_attention("ra", num_heads=2, head_dim=d, causal=causal, **options).eval()


def reference(q, k, v, mask=None, causal=False):
    """Eval (mean): w_n = q_n + sum_m pi_nm k_m, then softmax of l(k_m, w_n) over visible keys."""
    return ra_matrix(k, ra_mean_samples(q, k, mask, causal), mask, causal) @ v.double()


def kit_reference(attn, q, k, v, mask):
    return reference(q, k, v, mask, attn.causal)


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 64], ids=lambda d: f"d{d}")
@CAUSAL
def test_eval_matches_dense_form(n: int, d: int, causal: bool) -> None:
    check_forward(randomized(causal, d), kit_reference, n=n)


@CAUSAL
def test_training_matches_dense_form_with_the_same_draws(causal: bool) -> None:
    q, k, v = qkv(2, 2, 17, 8)
    mask = right_padding_mask([17, 11], 17)
    attn = randomized(causal).train()
    torch.manual_seed(3)
    out = attn(q, k, v, mask)
    torch.manual_seed(3)
    w = attn.sample_w(q, k, mask)
    ref = ra_matrix(k, w, mask, causal) @ v
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    assert not torch.allclose(attn(q, k, v, mask), out)


@pytest.mark.parametrize("rows", [1, 1 << 24], ids=["row-chunks", "one-chunk"])
def test_sampled_keys_follow_pi_over_visible_keys(rows: int, monkeypatch) -> None:
    """m* ~ pi_n restricted to real keys j <= n: frequencies within 5 standard errors of pi."""
    monkeypatch.setattr(ra, "_SAMPLE_ELEMENTS", rows * 6 * 20000)
    q, k, _ = qkv(1, 1, 6, 4)
    mask = torch.tensor([[True, True, False, True, True, True]])
    draws = 20000
    index = ra.sample_keys(
        q.expand(draws, -1, -1, -1), k.expand(draws, -1, -1, -1), mask.expand(draws, -1), True
    )
    freq = torch.nn.functional.one_hot(index[:, 0], 6).double().mean(0)  # (N queries, N keys)
    pi = softmax_matrix(q, k, mask, causal=True)[0, 0]
    real = mask[0]
    se = (pi * (1 - pi) / draws).sqrt().clamp_min(1e-12)
    assert ((freq - pi).abs()[real] / se[real]).max() < 5
    invisible = ~(torch.ones(6, 6, dtype=torch.bool).tril() & real[None, :])
    assert torch.all(freq[real][invisible[real]] == 0)


@pytest.mark.parametrize(("noise", "draws"), [("paper", 200_000), ("code", 50_000)])
def test_unbiased_with_paper_noise_biased_with_code_noise(noise: str, draws: int) -> None:
    """Spec §6: N=6, d=4, vectorised draws; z = (mean - softmax) / stderr per coordinate."""
    q, k, v = qkv(1, 1, 6, 4)
    attn = build_attention("ra", num_heads=1, head_dim=4, noise=noise).train()
    out = attn(*(t.expand(draws, -1, -1, -1) for t in (q, k, v)))
    z = (out.mean(0) - (softmax_matrix(q, k) @ v)[0]) / (out.std(0) / math.sqrt(draws))
    if noise == "paper":
        assert z.abs().max() < 5, z
    else:
        assert z.abs().max() > 10, z


@CAUSAL
def test_backward_matches_dense_form(causal: bool) -> None:
    check_backward(randomized(causal), kit_reference)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    check_gradcheck(randomized(causal, d=4), n=n)


@CAUSAL
def test_matrix_times_v_equals_forward(causal: bool) -> None:
    # in_training: the matrix is the eval path in either mode
    check_matrix(
        randomized(causal), lengths=(40, 21), in_training=True, row_sums=1e-12, nonnegative=True,
        zero_padded_columns=True,
    )  # fmt: skip


def test_eval_causal_is_strictly_causal() -> None:
    check_causal_prefix(randomized(True), future=(50.0, 50.0, 50.0))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
@CAUSAL
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float, training: bool) -> None:
    check_padding(randomized(causal).train(training), d=8, junk=junk, compare=not training)


def test_eval_modes() -> None:
    q, k, v = qkv(1, 2, 12, 8)
    mean = randomized()
    torch.testing.assert_close(mean(q, k, v), mean(q, k, v), atol=0, rtol=0)
    sample = randomized(eval_mode="sample")
    torch.manual_seed(1)
    drawn = sample(q, k, v)
    torch.manual_seed(1)
    w = q + k.gather(2, ra.sample_keys(q, k, None, False).unsqueeze(-1).expand_as(k))  # no noise
    torch.testing.assert_close(drawn, ra_matrix(k, w) @ v, atol=1e-10, rtol=0)
    with pytest.raises(ConfigError, match="allowed: mean, sample"):
        randomized(eval_mode="median")
    with pytest.raises(ConfigError, match="allowed: paper, code"):
        randomized(noise="none")
