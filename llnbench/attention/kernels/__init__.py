"""Optional fast paths for LLN, imported lazily: nothing here is needed on CPU.

- ``dispatch``: which backend runs a call (``attention.backend=auto|torch|triton|fla``).
- ``triton_lln``: fused bidirectional LLN forward and backward (Triton kernels in
  ``_triton_lln_kernels``, registered as ``torch.library`` ops in ``lln_ops``, tilings in
  ``tiles``; parity-tested on CPU under ``TRITON_INTERPRET=1``).
- ``triton_lln_causal``: chunked causal LLN forward and backward (kernels in
  ``_triton_lln_causal_kernels``, registered as ``torch.library`` ops; same interpreter parity).
- ``fla_causal``: the causal core on fla-core's chunked scalar-decay kernel (``chunk_simple_gla``),
  an explicit backend only, with fla-core's own Hopper/Triton backward guard mirrored.
"""
