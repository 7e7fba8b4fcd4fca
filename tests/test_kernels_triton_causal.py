"""Runs ``interp_triton_lln_causal.py`` (the chunked causal Triton LLN against float64, forward and
backward; its custom ops under opcheck and torch.compile) in a child process under
TRITON_INTERPRET=1, so the interpreter never leaks into the rest of the suite: the variable must
be set before ``import triton``, which this process may already have done. The fake (meta) path
of the ops needs no interpreter and is checked here too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_under_triton_interpreter

pytest.importorskip("triton", reason="triton is part of the dev extra")
CHECKS = Path(__file__).with_name("interp_triton_lln_causal.py")


def test_causal_triton_kernels_match_float64_under_the_interpreter() -> None:
    run_under_triton_interpreter(CHECKS)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_fake_tensors_give_the_shapes_without_running_a_kernel(masked: bool) -> None:
    """Under FakeTensorMode (what torch.compile traces with) the ops launch nothing."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from llnbench.attention.kernels import triton_lln_causal as causal

    with FakeTensorMode():
        q, k, v = (torch.empty(2, 3, 70, 48, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))  # fmt: skip
        mask = torch.ones(2, 70, dtype=torch.bool) if masked else None
        out = causal.lln_causal_attention(q, k, v, torch.ones(()), torch.ones(()), mask, chunk=32)
        assert out.shape == (2, 3, 70, 48) and out.dtype == torch.bfloat16
        _, states, vectors, shifts = torch.ops.llnbench.lln_causal_forward(
            q, k, v, torch.ones(1), torch.ones(1), None, 1e-8, 6, 32
        )
        assert states.shape == (6, 3, 64, 64) and vectors.shape == (6, 3, 2, 64)
        assert shifts.shape == (6, 4) and states.dtype == torch.float32
        out.sum().backward()
        assert q.grad.shape == q.shape and k.grad.dtype == torch.bfloat16


def test_entry_point_refuses_what_the_kernel_cannot_take() -> None:
    from llnbench.attention.kernels import triton_lln_causal as causal

    q = torch.zeros(1, 2, 8, 16)
    with pytest.raises(ValueError, match=r"chunk 48 not in \(16, 32, 64\)"):
        causal.lln_causal_attention(q, q, q, torch.ones(()), torch.ones(()), chunk=48)
    with pytest.raises(ValueError, match="alpha/beta with 3 values for B=1, H=2"):
        causal.lln_causal_attention(q, q, q, torch.ones(3), torch.ones(3))
    assert causal.kernel_chunk(100) == 64 and causal.kernel_chunk(128) == 64
    assert causal.kernel_chunk(32) == 32
    assert causal.kernel_chunk(64, head_dim=128) == 32 and causal.kernel_chunk(16, 128) == 16
