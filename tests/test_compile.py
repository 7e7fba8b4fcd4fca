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
        results = json.loads((run_dir / "results.json").read_text())
        assert results["compile"] == {"false": "off"}.get(setting, setting)
        assert results["tokens_per_s"] > 0 and results["tokens_per_s_after_first_step"] > 0
        assert all(r["train/tokens_per_s"] > 0 for r in rows if "train/loss" in r)
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


# -- graph breaks: the whole model is one graph (torch._dynamo.explain, backend-free) ----------


def _graph_breaks(fn, *args) -> list[str]:
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(fn)(*args)
    finally:
        torch._dynamo.reset()
    return [str(b.reason).splitlines()[0] for b in explained.break_reasons]


@pytest.mark.parametrize("name", ["softmax", "lln"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_attention_layer_has_no_graph_break(name: str, causal: bool) -> None:
    from llnbench.compiling import configure

    configure("eager")
    options = {"backend": "torch"} if name == "lln" else {}
    attn = build_attention(name, num_heads=2, head_dim=8, causal=causal, **options).train()
    q, k, v = (t.float().requires_grad_() for t in qkv(1, 2, 40, 8))
    assert _graph_breaks(attn, q, k, v) == []


def _tiny_mlm(name: str):
    from llnbench.model.roberta import IGNORE_INDEX, ModelConfig, RobertaForMaskedLM
    from llnbench.schema import AttentionConfig

    cfg = ModelConfig(layers=2, hidden=32, heads=2, ffn=64, max_len=64, vocab_size=64)
    options = {"backend": "torch"} if name == "lln" else {}
    torch.manual_seed(0)
    model = RobertaForMaskedLM(cfg, AttentionConfig(name, options), pad_id=1).train()
    ids = torch.randint(5, 64, (2, 64))
    labels = torch.where(torch.rand(2, 64) < 0.15, ids, IGNORE_INDEX)
    return model, ids, labels


@pytest.mark.parametrize("name", ["softmax", "lln"])
def test_whole_mlm_model_is_one_graph(name: str) -> None:
    """The MLM head's gather of masked positions (data-dependent size) is traced, not a break."""
    from llnbench.compiling import configure

    model, ids, labels = _tiny_mlm(name)
    configure("eager")
    assert _graph_breaks(model, ids, labels) == []
    configure("reduce-overhead")  # CUDA graphs: the static encoder apart from the sized head
    try:
        breaks = _graph_breaks(model, ids, labels)
    finally:
        configure("eager")
    assert breaks and all("Dynamic shape operator" in b for b in breaks)


def test_compiled_mlm_model_equals_eager_loss_and_gradients() -> None:
    model, ids, labels = _tiny_mlm("lln")
    compiled = maybe_compile(model, "aot_eager")
    torch.manual_seed(1)
    loss = compiled(ids, labels)[0]
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks
    ref = model(ids, labels)[0]
    ref.backward()
    torch._dynamo.reset()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_reduce_overhead_is_a_setting() -> None:
    from llnbench.compiling import COMPILE_BACKENDS

    assert compile_backend("reduce-overhead") == "reduce-overhead" in COMPILE_BACKENDS
