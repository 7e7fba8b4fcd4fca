"""LLN+Diag: the block-diagonal softmax branch, the mixing, and the official notebook's values."""

from __future__ import annotations

import pytest
import torch
from helpers import qkv, right_padding_mask

from llnbench.attention import build_attention
from llnbench.attention.lln_diag import block_diagonal_softmax
from llnbench.attention.reference import block_softmax_matrix, lln_matrix, lln_temperatures
from llnbench.testing import check_gradcheck, check_padding

# spec §7.2: torch.manual_seed(0); q, k, v = three torch.randn(1, 2, 4, 3); average, paper constants
GOLDEN = {
    False: [
        [
            [0.5032, 0.5248, -0.1797],
            [0.6414, 0.4807, -0.0756],
            [0.4694, 0.5255, -0.2264],
            [1.0657, 0.3068, 0.3656],
        ],
        [
            [-0.7917, -1.0734, -0.5935],
            [-0.7895, -1.1420, -0.6682],
            [-0.7662, -0.2344, -0.5392],
            [-0.4690, -0.7762, -0.9950],
        ],
    ],
    True: [
        [
            [-0.0933, 0.6871, -0.8383],
            [-0.0615, 0.7395, -0.6900],
            [0.1475, 0.6462, -0.5867],
            [1.0657, 0.3068, 0.3656],
        ],
        [
            [-0.8025, -1.2952, -0.7502],
            [-0.8238, -1.2323, -0.7327],
            [-0.9951, -0.3673, -0.3389],
            [-0.4690, -0.7762, -0.9950],
        ],
    ],
}


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_official_notebook_values(causal: bool) -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3)
    attn = build_attention("lln_diag", num_heads=2, head_dim=3, causal=causal, constants="paper")
    # the notebook computes statistics per call: training mode (eval-mode causal uses running stats)
    attn.train()
    torch.testing.assert_close(attn(q, k, v), torch.tensor([GOLDEN[causal]]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("n", "block"), [(17, 4), (130, 64), (3, 8), (8, 8)], ids=["rem", "N130-w64", "N<w", "exact"]
)
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_diag_branch_matches_block_loop(n: int, block: int, causal: bool, masked: bool) -> None:
    q, k, v = qkv(2, 2, n, 4)
    mask = right_padding_mask([n, max(1, n - 5)], n) if masked else None
    out = block_diagonal_softmax(q, k, v, mask, block, causal)
    ref = block_softmax_matrix(q, k, block, mask, causal) @ v
    real = slice(None) if mask is None else mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], atol=1e-10, rtol=0)


def test_per_block_key_masks() -> None:
    """Each block gets its own mask slice (the official code reuses the first block's)."""
    q, k, v = qkv(1, 1, 8, 4)
    mask = torch.tensor([[True, True, True, True, True, False, True, False]])
    out = block_diagonal_softmax(q, k, v, mask, 4, False)
    ref = block_softmax_matrix(q, k, 4, mask) @ v
    torch.testing.assert_close(out[:, :, mask[0]], ref[:, :, mask[0]], atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_average_is_half_lln_half_diag(causal: bool) -> None:
    q, k, v = qkv(2, 2, 21, 8)
    mask = right_padding_mask([21, 15], 21)
    attn = build_attention(
        "lln_diag",
        num_heads=2,
        head_dim=8,
        causal=causal,
        eps=0.0,
        stats_scope="sequence",
        diag_block=5,
    ).train()
    out = attn(q, k, v, mask)
    alpha, beta = lln_temperatures(q, k, mask, "sequence", attn.lln.a, attn.lln.b)
    p = 0.5 * lln_matrix(q, k, alpha, beta, mask, causal) + 0.5 * block_softmax_matrix(
        q, k, 5, mask, causal
    )
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], (p @ v)[real], atol=1e-10, rtol=0)
    torch.testing.assert_close(
        attn.attention_matrix(q, k, mask)[mask[:, None, :].expand(2, 2, 21)],
        p[mask[:, None, :].expand(2, 2, 21)],
        atol=1e-10,
        rtol=0,
    )


def test_short_sequence_is_average_of_lln_and_softmax() -> None:
    q, k, v = qkv(1, 2, 5, 8)
    attn = build_attention("lln_diag", num_heads=2, head_dim=8)
    lln = build_attention("lln", num_heads=2, head_dim=8)
    soft = build_attention("softmax", num_heads=2, head_dim=8)
    torch.testing.assert_close(
        attn(q, k, v), 0.5 * lln(q, k, v) + 0.5 * soft(q, k, v), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("combine", ["learnable_ratio", "learnable_scale"])
def test_learnable_modes_start_at_average(combine: str) -> None:
    q, k, v = qkv(1, 2, 19, 8)
    avg = build_attention("lln_diag", num_heads=2, head_dim=8).double()
    learn = build_attention("lln_diag", num_heads=2, head_dim=8, combine=combine).double()
    assert sum(p.numel() for p in learn.parameters()) == 2 * 8 * (
        2 if combine.endswith("scale") else 1
    )
    torch.testing.assert_close(learn(q, k, v), avg(q, k, v), atol=1e-12, rtol=0)
    with pytest.raises(Exception, match="combine='average'"):
        learn.attention_matrix(q, k)


def test_gradcheck() -> None:
    attn = build_attention(
        "lln_diag",
        num_heads=2,
        head_dim=4,
        eps=0.0,
        diag_block=3,
        fixed_alpha_beta=(0.7, 0.9),
        causal=True,
    ).eval()
    check_gradcheck(attn, n=7, masked=False)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("junk", [1e4, float("inf"), float("nan")], ids=["big", "inf", "nan"])
def test_padding_invariance_and_finite_gradients(causal: bool, junk: float) -> None:
    """Sequence-scoped statistics; the block softmax zeroes padded rows (0 weight x inf is NaN)."""
    attn = build_attention("lln_diag", num_heads=2, head_dim=8, causal=causal,
                           stats_scope="sequence", diag_block=4).train()  # fmt: skip
    check_padding(attn, junk=junk)
