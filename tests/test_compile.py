"""``trainer.compile`` and ``llnbench scale --compile``: torch.compile wiring, tested on CPU.

The tests compile with ``aot_eager`` (dynamo + AOT autograd, no code generation: seconds);
``true`` means inductor, which on this 2-core CPU takes ~40 s for one LLN layer (README).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import qkv, tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.attention import build_attention
from llnbench.cli import app
from llnbench.compiling import compile_backend, maybe_compile
from llnbench.errors import ConfigError


def test_settings() -> None:
    assert compile_backend(False) is None and compile_backend(True) == "inductor"
    assert compile_backend("aot_eager") == "aot_eager"
    with pytest.raises(ConfigError, match=r"unknown compile setting 'jit'; allowed: true, false, "):
        compile_backend("jit")
    layer = torch.nn.Linear(2, 2)
    assert maybe_compile(layer, False) is layer


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_compiled_lln_layer_equals_eager_forward_and_backward(causal: bool) -> None:
    attn = build_attention("lln", num_heads=2, head_dim=8, causal=causal).train()
    compiled = maybe_compile(attn, "aot_eager")
    inputs = [t.float().requires_grad_() for t in qkv(1, 2, 40, 8)]
    clones = [t.detach().clone().requires_grad_() for t in inputs]
    out, ref = compiled(*inputs), attn(*clones)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip(inputs, clones):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


def test_trainer_compile_trains_like_eager(tmp_path) -> None:
    losses = {}
    for setting in ("false", "aot_eager"):
        run_dir = tmp_path / setting
        args = tiny_pretrain_args(tmp_path, run_dir, f"trainer.compile={setting}",
                                  "trainer.max_steps=2", "trainer.log_every=1")  # fmt: skip
        result = CliRunner().invoke(app, ["pretrain", *args])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[setting] = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses["false"]) == 2
    assert losses["aot_eager"] == pytest.approx(losses["false"], rel=1e-5)


def test_bad_trainer_compile_value_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["pretrain", *tiny_pretrain_args(tmp_path, tmp_path / "r",
                                      "trainer.compile=jit")])  # fmt: skip
    assert result.exit_code == 2
    assert "trainer.compile" in result.output and "aot_eager" in result.output


def test_scale_compile_rows(tmp_path) -> None:
    result = CliRunner().invoke(app, [
        "scale", "--attention", "lln", "--min-len", "64", "--max-len", "64", "--mode",
        "fwdbwd", "--device", "cpu", "--heads", "2", "--out", str(tmp_path), "compile=aot_eager",
        "warmup=1", "min_time_s=0", "max_repeats=3", "wandb.mode=disabled",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    assert [(r["attention"], r["status"], r["compile"]) for r in rows] == [
        ("lln", "ok", "aot_eager")]  # fmt: skip
