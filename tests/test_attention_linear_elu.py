"""elu + 1 linear attention against its float64 dense form: forward, backward, masks, causality."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import check_padding, qkv

from llnbench.attention import build_attention
from llnbench.attention.reference import feature_matrix
from llnbench.testing import (
    check_backward,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_matrix,
)

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])


def elu(causal: bool = False, d: int = 8, **options):
    return build_attention("linear_elu", num_heads=2, head_dim=d, causal=causal, **options).eval()


def reference(q, k, v, mask=None, causal=False, eps=1e-6):
    phi_q, phi_k = F.elu(q.double()) + 1, F.elu(k.double()) + 1
    return feature_matrix(phi_q, phi_k, mask, causal, eps) @ v.double()


def kit_reference(attn, q, k, v, mask):
    return reference(q, k, v, mask, attn.causal)


@pytest.mark.parametrize("n", [1, 5, 17, 64, 130], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("d", [4, 64], ids=lambda d: f"d{d}")
@CAUSAL
def test_float64_matches_dense_form(n: int, d: int, causal: bool) -> None:
    check_forward(elu(causal, d), kit_reference, n=n)


@CAUSAL
def test_backward_matches_dense_form(causal: bool) -> None:
    check_backward(elu(causal, chunk=5), kit_reference)


@CAUSAL
@pytest.mark.parametrize("n", [5, 7], ids=lambda n: f"N{n}")
def test_gradcheck(causal: bool, n: int) -> None:
    check_gradcheck(elu(causal, d=4, chunk=3), n=n)


@CAUSAL
def test_matrix_times_v_equals_forward(causal: bool) -> None:
    check_matrix(elu(causal), n=40, lengths=(40, 21), nonnegative=True, zero_padded_columns=True)


def test_causal_prefix_and_future_content() -> None:
    check_causal_prefix(elu(True, chunk=8))


@CAUSAL
@pytest.mark.parametrize("junk", [1e4, float("inf"), float("nan")], ids=["big", "inf", "nan"])
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float) -> None:
    check_padding(elu(causal), d=8, junk=junk)


def test_left_padding_is_finite() -> None:
    q, k, v = qkv(1, 2, 6, 4)
    mask = torch.tensor([[False, False, True, True, True, True]])
    assert torch.isfinite(elu(True, d=4)(q, k, v, mask)).all()
