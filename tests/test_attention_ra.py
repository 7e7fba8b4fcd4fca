"""Randomized attention: exact against its dense float64 form, and unbiased for softmax (paper noise)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_padding, qkv, real_rows, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention, ra
from llnbench.attention.reference import ra_matrix, ra_mean_samples, softmax_matrix
from llnbench.errors import ConfigError

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def randomized(causal: bool = False, d: int = 8, **options):
    return build_attention("ra", num_heads=2, head_dim=d, causal=causal, **options).eval()


def reference(q, k, v, mask=None, causal=False):
    """Eval (mean): w_n = q_n + sum_m pi_nm k_m, then softmax of l(k_m, w_n) over visible keys."""
    return ra_matrix(k, ra_mean_samples(q, k, mask, causal), mask, causal) @ v.double()


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 64], ids=lambda d: f"d{d}")
@CAUSAL
def test_eval_matches_dense_form(n: int, d: int, causal: bool) -> None:
    q, k, v = qkv(2, 2, n, d)
    mask = right_padding_mask([n, max(1, n - 3)], n)
    attn = randomized(causal, d)
    out = attn(*(with_junk_padding(t, mask) for t in (q, k, v)), mask)
    ref = reference(q, k, v, mask, causal)
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(attn(q, k, v), reference(q, k, v, None, causal), atol=1e-10, rtol=0)


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
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 23, 8))
    grads = torch.autograd.grad(randomized(causal)(q, k, v).square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(reference(q, k, v, None, causal).square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-9)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, n, 4))
    attn = randomized(causal, d=4)
    mask = torch.tensor([[True] * (n - 1) + [False]])
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask)[:, :, : n - 1], (q, k, v))


@CAUSAL
def test_matrix_times_v_equals_forward(causal: bool) -> None:
    q, k, v = qkv(2, 2, 40, 8)
    mask = right_padding_mask([40, 21], 40)
    attn = randomized(causal)
    out = attn(q, k, v, mask)
    p = attn.train().attention_matrix(q, k, mask)  # the eval path in either mode
    real = real_rows(mask, out)
    torch.testing.assert_close((p @ v)[real], out[real], atol=1e-10, rtol=0)
    sums = p.sum(-1)[mask[:, None].expand(2, 2, 40)]
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)
    assert torch.all(p >= 0) and torch.all(p[1, :, :, 21:] == 0)


def test_eval_causal_is_strictly_causal() -> None:
    q, k, v = qkv(1, 2, 50, 8)
    attn = randomized(True)
    full = attn(q, k, v)
    for t in (1, 17, 49):
        torch.testing.assert_close(
            attn(q[:, :, :t], k[:, :, :t], v[:, :, :t]), full[:, :, :t], atol=1e-12, rtol=0
        )
    evil = [x.clone() for x in (q, k, v)]
    for x in evil:
        x[:, :, 30:] = 50.0
    torch.testing.assert_close(attn(*evil)[:, :, :30], full[:, :, :30], atol=1e-12, rtol=0)


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
