"""``check_attention``: every check of ``llnbench.testing.checks`` on one mechanism class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llnbench.attention import check_options
from llnbench.attention.base import Attention
from llnbench.attention.external import check_class
from llnbench.errors import ConfigError
from llnbench.testing.checks import (
    Reference,
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


def build(
    cls: type[Attention],
    *,
    num_heads: int,
    head_dim: int,
    causal: bool,
    options: Mapping[str, Any] | None = None,
) -> Attention:
    """``cls`` built as ``build_attention`` would: options checked against the signature first."""
    try:
        check_class(cls.name, cls)
        values = check_options(cls, options or {})
    except ConfigError as err:
        raise AssertionError(str(err)) from None
    return cls(num_heads=num_heads, head_dim=head_dim, causal=causal, **values)


def check_attention(
    cls: type[Attention],
    reference: Reference = matrix_reference,
    *,
    options: Mapping[str, Any] | None = None,
    num_heads: int = 2,
    head_dim: int = 8,
    causal: Sequence[bool] | None = None,
    lengths: Sequence[int] = (1, 5, 17, 64),
    junk: Sequence[float] = (1e4, float("inf"), float("nan")),
    causal_prefixes: Sequence[int] = (1, 17, 49),
    batch_independent: bool = True,
    gradcheck: bool = True,
    atol: float = 1e-10,
) -> list[str]:
    """Check a mechanism class against the contract, in float64 and in eval mode:

    the interface and dtype policy (fp32, bf16 autocast); forward against ``reference`` at each of
    ``lengths`` with junk-filled padding and without a mask; backward against the reference;
    ``attention_matrix @ v`` against the forward; junk padding (each of ``junk``) leaves real
    outputs and gradients untouched (also in training mode for a stochastic mechanism, without
    comparing); strict causality for ``causal=True`` (outputs on ``causal_prefixes`` equal the
    prefix's own, and ignore adversarial later tokens); batch independence (where claimed);
    gradcheck at head dim 4, N = 5 and 7. ``causal`` defaults to both forms where the class
    supports causality. Raises AssertionError at the first failure; returns the checks run.
    """
    if causal is None:
        causal = (False, True) if cls.supports_causal else (False,)
    forms = tuple(causal)
    done: list[str] = []

    def make(is_causal: bool, d: int = head_dim) -> Attention:
        return build(cls, num_heads=num_heads, head_dim=d, causal=is_causal, options=options)

    check_interface(make(forms[0]))
    done.append("interface")
    for is_causal in forms:
        form = "causal" if is_causal else "bidirectional"
        attn = make(is_causal).double().eval()
        for n in lengths:
            check_forward(attn, reference, n=n, atol=atol)
        check_backward(attn, reference)
        check_matrix(attn, atol=atol)
        for value in junk:
            check_padding(attn, junk=value)
            if cls.stochastic:
                check_padding(attn.train(), junk=value, compare=False)
                attn.eval()
        done += [f"{form} forward", f"{form} backward", f"{form} matrix", f"{form} padding"]
        if is_causal:
            check_causal_prefix(attn, prefixes=causal_prefixes)
            done.append("causal prefixes")
        if batch_independent:
            check_batch_independence(attn)
            done.append(f"{form} batch independence")
        if gradcheck:
            small = make(is_causal, 4).double().eval()
            for n in (5, 7):
                check_gradcheck(small, n=n)
            done.append(f"{form} gradcheck")
    return done
