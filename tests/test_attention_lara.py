"""LARA against a brute-force evaluation of its own formula, and its limits and consistency."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import check_padding, qkv, real_rows, right_padding_mask, with_junk_padding

from llnbench.attention import build_attention
from llnbench.attention.lara import lara_weights
from llnbench.attention.reference import lara_matrix, ra_matrix, segment_means, softmax_matrix
from llnbench.errors import ConfigError
from llnbench.testing import check_gradcheck, check_matrix

MIS = pytest.mark.parametrize("mis_type", ["opt", "bh"])


def lara(d: int = 4, **options):
    return build_attention("lara", num_heads=2, head_dim=d, **options).double().eval()


def reference_landmarks(attn, q, k, mask):
    """q_bar, mu and valid slots from the module's parameters, by explicit segment loops."""
    if attn.proposal == "adaptive-1d":
        d = q.shape[-1]
        q = F.layer_norm(
            F.linear(q, attn.q_proj.weight, attn.q_proj.bias),
            (d,),
            attn.q_norm.weight,
            attn.q_norm.bias,
        )
        k = F.layer_norm(
            F.linear(k, attn.k_proj.weight, attn.k_proj.bias),
            (d,),
            attn.k_norm.weight,
            attn.k_norm.bias,
        )
    q_bar, valid = segment_means(q, mask, attn.num_landmarks)
    k_bar, _ = segment_means(k, mask, attn.num_landmarks)
    return q_bar, q_bar + k_bar, valid


def brute_force(attn, q, k, v, mask, w=None):
    q_bar, mu, valid = reference_landmarks(attn, q, k, mask)
    w = mu.unsqueeze(-2) if w is None else w
    p = lara_matrix(q, k, mu, w, q_bar, mask, valid, attn.mis_type, attn.alpha_coeff)
    return p @ v


@pytest.mark.parametrize("proposal", ["adaptive-1d", "no-param"])
@pytest.mark.parametrize(
    "lengths", [[13, 13], [13, 3], [13, 4], [13, 9]], ids=["full", "nb<C", "nb=C", "nb>C"]
)
def test_landmarks_are_segment_means_over_real_tokens(proposal: str, lengths: list[int]) -> None:
    q, k, _ = qkv(2, 2, 13, 4)
    mask = right_padding_mask(lengths, 13)
    attn = lara(num_landmarks=4, proposal=proposal)
    q_bar, mu, valid = attn.landmarks(
        q.masked_fill(~mask[:, None, :, None], 0.0),
        k.masked_fill(~mask[:, None, :, None], 0.0),
        mask,
    )
    ref_q_bar, ref_mu, ref_valid = reference_landmarks(attn, q, k, mask)
    assert torch.equal(valid, ref_valid)
    torch.testing.assert_close(q_bar, ref_q_bar, atol=1e-12, rtol=0)
    torch.testing.assert_close(mu, ref_mu, atol=1e-12, rtol=0)


def test_left_padding_segments_start_at_the_first_real_token() -> None:
    q, k, _ = qkv(1, 2, 9, 4)
    mask = torch.tensor([[False, False, True, True, True, True, True, True, True]])
    q_bar, _, valid = lara(num_landmarks=3, proposal="no-param").landmarks(q, k, mask)
    # 7 real tokens in 3 segments: sizes 2, 2, 3
    spans = [q[:, :, 2:4], q[:, :, 4:6], q[:, :, 6:9]]
    torch.testing.assert_close(
        q_bar, torch.stack([s.mean(-2) for s in spans], -2), atol=1e-12, rtol=0
    )
    assert valid.all()


@MIS
@pytest.mark.parametrize("samples", [1, 2], ids=["S1", "S2"])
def test_lara_weights_match_brute_force_with_injected_samples(mis_type: str, samples: int) -> None:
    gen = torch.Generator().manual_seed(2)
    q, k, _ = qkv(2, 2, 7, 4)
    mask = right_padding_mask([7, 5], 7)
    mu, q_bar = (torch.randn(2, 2, 3, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    w = mu.unsqueeze(-2) + torch.randn(2, 2, 3, samples, 4, generator=gen, dtype=torch.float64)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    beta, probs = lara_weights(q, k, mu, w, q_bar, mask, valid, mis_type=mis_type, alpha_coeff=1.5)
    p = beta.transpose(-1, -2) @ probs
    ref = lara_matrix(q, k, mu, w, q_bar, mask, valid, mis_type, 1.5)
    real = real_rows(mask, p)
    torch.testing.assert_close(p[real], ref[real], atol=1e-12, rtol=0)


@MIS
@pytest.mark.parametrize("proposal", ["adaptive-1d", "no-param"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_forward_matches_brute_force(mis_type: str, proposal: str, training: bool) -> None:
    q, k, v = qkv(2, 2, 7, 4, scale=1.5)
    mask = right_padding_mask([7, 5], 7)
    attn = lara(num_landmarks=3, mis_type=mis_type, proposal=proposal, samples_per_proposal=2)
    attn.train(training)
    torch.manual_seed(4)
    out = attn(*(with_junk_padding(t, mask) for t in (q, k, v)), mask)
    w = None
    if training:  # the module's own draw: reparameterised around the reference landmarks
        torch.manual_seed(4)
        w = attn.draw(reference_landmarks(attn, q, k, mask)[1])
        assert w.shape == (2, 2, 3, 2, 4)
    ref = brute_force(attn, q, k, v, mask, w)
    torch.testing.assert_close(
        out[real_rows(mask, out)], ref[real_rows(mask, ref)], atol=1e-10, rtol=0
    )


@MIS
def test_matrix_is_row_stochastic_and_matches_forward(mis_type: str) -> None:
    # in_training: the matrix is the eval path in either mode
    check_matrix(
        lara(d=8, num_landmarks=6, mis_type=mis_type), lengths=(40, 21), in_training=True,
        row_sums=1e-12, nonnegative=True, zero_padded_columns=True,
    )  # fmt: skip


def test_single_landmark_gives_u1_everywhere() -> None:
    q, k, v = qkv(2, 2, 12, 4)
    mask = right_padding_mask([12, 7], 12)
    attn = lara(num_landmarks=1)
    out = attn(q, k, v, mask)
    _, mu, _ = reference_landmarks(attn, q, k, mask)  # (B, H, 1, d): means over real tokens
    u1 = (ra_matrix(k, mu, mask) @ v)[:, :, :1]  # softmax_m l(k_m, mu) v_m
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], u1.expand_as(out)[real], atol=1e-12, rtol=0)


@MIS
def test_rfa_limit_is_favor_plus(mis_type: str) -> None:
    """mu = 0 and alpha_coeff = 0: LARA with samples w_c is FAVOR+ with W rows d^(-1/4) w_c."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = qkv(1, 2, 9, 4)
    w = torch.randn(1, 2, 5, 1, 4, generator=gen, dtype=torch.float64)
    mu = torch.zeros(1, 2, 5, 4, dtype=torch.float64)
    q_bar = torch.randn(1, 2, 5, 4, generator=gen, dtype=torch.float64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    beta, probs = lara_weights(q, k, mu, w, q_bar, None, valid, mis_type=mis_type, alpha_coeff=0.0)
    favor = build_attention(
        "performer", num_heads=2, head_dim=4, nb_features=5, redraw="fixed", eps=0.0
    ).eval()
    favor.eval_projection = 4**-0.25 * w[0, :, :, 0]
    torch.testing.assert_close(
        beta.transpose(-1, -2) @ (probs @ v), favor(q, k, v), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(("noise", "bound"), [("paper", 0.6), ("code", None)])
def test_consistency_in_samples_per_proposal(noise: str, bound: float | None) -> None:
    """Paper noise: error vs softmax at S=256 <= 0.6x that at S=1 (5 seeds); code noise plateaus."""
    errors = {}
    for samples in (1, 256):
        total = 0.0
        for seed in range(5):
            q, k, v = qkv(1, 2, 64, 16, seed=seed)
            attn = lara(
                d=16,
                num_landmarks=8,
                noise=noise,
                proposal="no-param",
                samples_per_proposal=samples,
            ).train()
            torch.manual_seed(100 + seed)
            total += (attn(q, k, v) - softmax_matrix(q, k) @ v).abs().mean().item()
        errors[samples] = total / 5
    ratio = errors[256] / errors[1]
    if bound is not None:
        assert ratio <= bound, errors
    else:
        assert ratio > 0.7, errors


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("junk", [1e4, float("nan")], ids=["big", "nan"])
@pytest.mark.parametrize("lengths", [[30, 19], [30, 3]], ids=["nb>C", "nb<C"])
def test_padding_invariance_and_finite_gradients(
    lengths: list[int], junk: float, training: bool
) -> None:
    attn = lara(num_landmarks=5).train(training)
    torch.manual_seed(1)
    check_padding(attn, d=4, lengths=tuple(lengths), junk=junk, compare=not training)
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(n: int) -> None:
    check_gradcheck(lara(num_landmarks=3), n=n)


def test_training_draws_and_eval_is_deterministic() -> None:
    q, k, v = qkv(1, 2, 16, 4)
    attn = lara(num_landmarks=4)
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v), atol=0, rtol=0)
    attn.train()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))
    assert 1.0 <= attn.last_stats["ess"] <= 4.0


def test_option_validation() -> None:
    with pytest.raises(ConfigError, match="no causal form"):
        build_attention("lara", num_heads=2, head_dim=4, causal=True)
    with pytest.raises(ConfigError, match="allowed: opt, bh"):
        lara(mis_type="mis-opt")
    with pytest.raises(ConfigError, match="allowed: adaptive-1d, no-param"):
        lara(proposal="pool")
    with pytest.raises(ConfigError, match="positive"):
        lara(samples_per_proposal=0)
