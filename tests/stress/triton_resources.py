"""Registers, spills and shared memory of the fused LLN kernels at the tile table's tilings, for
sm90 and sm80, from Triton's own compile (its bundled ptxas and cuobjdump): no GPU needed.

    python tests/stress/triton_resources.py > triton-resources.md      # ~1 min per row on CPU

A kernel that spills (stack > 0) or needs more shared memory than the device has (sm90 227 KB,
sm80 163 KB per block) is a tiling to change in ``llnbench/attention/kernels/tiles.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from llnbench.attention.kernels import _triton_lln_kernels as ker
from llnbench.attention.kernels.tiles import TABLE, block_d

TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
FLOATS = {"a", "b", "min_sigma", "eps"}
F32_POINTERS = {"PART", "TEMPS", "STATE", "DSTATE", "ALPHA", "BETA"}
IO_POINTERS = {"Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV"}
HEAD_DIMS = {"small": 64, "d128": 128}


def signature(kernel, dtype: str, constants: dict) -> dict[str, str]:
    def kind(name: str) -> str:
        if name in constants:
            return "constexpr"
        if name in FLOATS:
            return "fp32"
        if name in IO_POINTERS:
            return f"*{dtype}"
        return {"MASK": "*u8", "COUNTER": "*i32"}.get(
            name, "*fp32" if name in F32_POINTERS else "i32"
        )

    return {name: kind(name) for name in kernel.arg_names}


def resources(kernel, dtype: str, constants: dict, warps: int, arch: int) -> tuple[str, str, int]:
    source = ASTSource(kernel, signature(kernel, dtype, constants), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": warps})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        report = subprocess.run([os.path.join(TOOLS, "cuobjdump"), "--dump-resource-usage", path],
                                capture_output=True, text=True).stdout  # fmt: skip
    regs, stack = re.search(r"REG:(\d+)", report), re.search(r"STACK:(\d+)", report)
    return (
        regs.group(1) if regs else "?",
        stack.group(1) if stack else "?",
        compiled.metadata.shared,
    )


def main() -> None:
    print(
        "| arch | head dim | inputs | tiling | kernel | registers | stack (spills) B | shared B |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (arch, dims, inputs), t in TABLE.items():
        if arch not in ("sm90", "sm80"):
            continue
        bd = block_d(HEAD_DIMS[dims])
        dtype, precision = ("fp32", "ieee") if inputs == "fp32" else ("bf16", "tf32")
        rows = {"BLOCK_D": bd, "PRECISION": precision, "HAS_MASK": True}
        plans = [
            (ker.moments_kernel, {"HAS_MASK": True, "BLOCK_N": t.block, "BLOCK_D": bd,
                                  "BLOCK_P": 1024, "SLOTS": ker.MOMENT_SLOTS}, t.warps),
            (ker.kv_state_kernel, {**rows, "BLOCK_N": t.block}, t.warps),
            (ker.query_kernel, {**rows, "BLOCK_M": t.block}, t.warps),
            (ker.query_backward_kernel, {**rows, "BLOCK_M": t.block}, t.backward_warps),
            (ker.key_backward_kernel, {**rows, "BLOCK_N": t.block}, t.warps),
        ]  # fmt: skip
        for kernel, constants, warps in plans:
            regs, stack, shared = resources(kernel, dtype, constants, warps, int(arch[2:]))
            print(f"| {arch} | {HEAD_DIMS[dims]} | {dtype} | {t.block} rows, {warps} warps | "
                  f"{kernel.__name__} | {regs} | {stack} | {shared} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
