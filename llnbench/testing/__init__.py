"""The exactness checks llnbench applies to its own mechanisms, for yours, from your own pytest.

    import torch
    from llnbench.testing import check_attention, check_forward, qkv

    from my_pkg.attention import MyAttention


    def my_reference(attn, q, k, v, mask):  # a naive float64 form, written from the formula
        ...


    def test_my_attention_meets_the_contract():
        check_attention(MyAttention, my_reference, options={"temperature": 2.0})


    def test_long_sequences():  # any single check, on a module built your way
        attn = MyAttention(num_heads=2, head_dim=8).double().eval()
        check_forward(attn, my_reference, n=300)

``check_attention`` runs everything below on both causal forms (where supported); each check is
also a function of its own. A ``reference(attn, q, k, v, mask) -> out`` is optional: without one
the checks compare against the module's own ``attention_matrix(q, k, mask) @ v``. Every failure
is an ``AssertionError`` naming the property and the mismatch.

Every job runs the cheap part (:func:`verify_outside_attention`: import, build, one fp32 call on
a tiny padded batch) on a mechanism from outside llnbench before any other work.
"""

from llnbench.testing.checks import (
    Reference,
    assert_close,
    check_backward,
    check_batch_independence,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_interface,
    check_matrix,
    check_padding,
    matrix_reference,
)
from llnbench.testing.inputs import qkv, real_rows, right_padding_mask, with_junk_padding
from llnbench.testing.outside import verify_outside_attention
from llnbench.testing.suite import build, check_attention

__all__ = [
    "Reference",
    "assert_close",
    "build",
    "check_attention",
    "check_backward",
    "check_batch_independence",
    "check_causal_prefix",
    "check_forward",
    "check_gradcheck",
    "check_interface",
    "check_matrix",
    "check_padding",
    "matrix_reference",
    "qkv",
    "real_rows",
    "right_padding_mask",
    "verify_outside_attention",
    "with_junk_padding",
]
