"""Checkpoint mode of `llnbench analyze`, the q/k capture behind it, and `analysis_every`.

The CLI tests share four seconds-long pretraining runs (2 layers, 2 heads, N=32) made once.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.analysis.capture import (
    attention_cores,
    capture_qk,
    example_matrices,
    layer_instruments,
    measure_layers,
)
from llnbench.analysis.concentration import measure
from llnbench.analysis.probe import TrainingProbe, logged_steps
from llnbench.cli import app
from llnbench.model.roberta import ModelConfig, RobertaForMaskedLM
from llnbench.schema import AttentionConfig

SHAPE = ("model.layers=2", "model.heads=2")
PAPER = "attention.constants=paper"  # skips fitting LLN's (a, b) for head dim 32 (~10 s)
RUNS = {  # run name -> overrides
    "softmax": ("attention=softmax", "analysis_every=2"),
    "lln": ("attention=lln", PAPER, "analysis_every=4"),
    "lln_off": ("attention=lln", PAPER, "analysis_every=0"),
    "lln_diag": ("attention=lln_diag", PAPER),
}


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    out = {}
    for name, overrides in RUNS.items():
        run_dir = tmp / name
        args = tiny_pretrain_args(tmp, run_dir, *SHAPE, *overrides)
        result = CliRunner().invoke(app, ["pretrain", *args])
        assert result.exit_code == 0, result.output
        out[name] = run_dir
    return out


def analyze(run_dir, *args: str):
    result = CliRunner().invoke(
        app, ["analyze", "mode=checkpoint", "wandb.mode=disabled", f"run_dir={run_dir}", *args]
    )
    return result


# ---------------------------------------------------------------------------------------------
# during pretraining


def test_analysis_every_logs_rows_at_expected_steps(runs) -> None:
    steps = {name: [r["step"] for r in rows(runs[name]) if "analysis/layer0/entropy" in r]
             for name in RUNS}  # fmt: skip
    assert steps == {"softmax": [0, 2, 4, 6], "lln": [0, 4, 6], "lln_off": [], "lln_diag": []}
    row = next(r for r in rows(runs["lln"]) if r["step"] == 4 and "analysis/seq_len" in r)
    assert row["analysis/seq_len"] == 32
    for layer in ("layer0", "layer1", "mean"):
        assert 0 < row[f"analysis/{layer}/entropy"] <= math.log(32) + 1e-9
        assert 0 <= row[f"analysis/{layer}/gap"] <= 1
        assert row[f"analysis/{layer}/alpha"] > 0 and row[f"analysis/{layer}/sigma_q"] > 0
    assert "analysis/layer0/alpha" not in rows(runs["softmax"])[0]


def test_analysis_every_does_not_change_training(runs) -> None:
    """Same losses, gradients and LLN statistics with the probe on as with it off."""
    keys = ("train/loss", "train/grad_norm", "train/attn/alpha", "val/loss")

    def curve(run_dir):
        return [(r["step"], *(r.get(k) for k in keys)) for r in rows(run_dir)
                if "train/loss" in r or "val/loss" in r]  # fmt: skip

    assert curve(runs["lln"]) == curve(runs["lln_off"])


def test_probe_logs_due_steps_once_across_restarts(tmp_path) -> None:
    class Tracker:
        def log(self, row, step):
            with (tmp_path / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps({"step": step, **row}) + "\n")

    model = tiny_model("softmax")
    ids = torch.randint(5, 60, (2, 12))
    probe = TrainingProbe(3, ids, tmp_path / "metrics.jsonl", max_steps=7, gap=False)
    for step in range(8):
        probe(model, step, Tracker())
    assert sorted(logged_steps(tmp_path / "metrics.jsonl")) == [0, 3, 6, 7]
    again = TrainingProbe(3, ids, tmp_path / "metrics.jsonl", max_steps=7, gap=False)
    assert again(model, 6, Tracker()) is None  # a resumed run does not log step 6 twice
    assert len(rows(tmp_path)) == 4 and len(probe.seconds) == 4


# ---------------------------------------------------------------------------------------------
# checkpoint mode end to end


def test_checkpoint_mode_compares_runs(runs, tmp_path) -> None:
    out = tmp_path / "analyze"
    paths = ",".join(str(runs[n]) for n in ("softmax", "lln", "lln_diag"))
    result = analyze(out, f"checkpoint=[{paths}]", "num_sequences=3")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["mode"] == "checkpoint"
    assert data["sequences"]["count"] == 3 and data["sequences"]["seq_len"] == 32
    assert [r["label"] for r in data["runs"]] == ["softmax", "lln", "lln_diag"]
    ln_n = math.log(32)
    for run in data["runs"]:
        assert run["step"] == 6 and len(run["layers"]) == 2
        for layer in run["layers"]:
            assert all(0 < h <= ln_n + 1e-9 for h in layer["per_head"]["entropy"])
            assert all(0 <= g <= 1 for g in layer["per_head"]["gap"])
            assert len(layer["per_head"]["entropy"]) == 2
            assert layer["mean"]["entropy"] == pytest.approx(sum(layer["per_head"]["entropy"]) / 2)
        assert run["mean"]["entropy"] == pytest.approx(
            sum(layer["mean"]["entropy"] for layer in run["layers"]) / 2
        )
    by = {r["label"]: r for r in data["runs"]}
    diag = by["lln_diag"]["layers"][0]
    assert {"lln_branch_entropy", "lln_branch_gap"} <= set(diag["per_head"])
    assert diag["mean"]["lln_branch_entropy"] != diag["mean"]["entropy"]
    assert "mixture" in by["lln_diag"]["note"] and "LLN branch alone" in by["lln_diag"]["note"]
    assert "lln_branch_entropy" not in by["lln"]["layers"][0]["mean"]
    assert by["lln"]["layers"][0]["mean"]["alpha"] > 0
    assert (
        by["softmax"]["logged_during_training"] == 4
        and by["lln_diag"]["logged_during_training"] == 0
    )

    metrics = rows(out)
    assert [(m["run"], m["layer"]) for m in metrics] == [
        (name, layer) for name in ("softmax", "lln", "lln_diag") for layer in (0, 1)
    ]
    assert all(m["seq_len"] == 32 for m in metrics)
    with (out / "analyze_layers.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6 and {"entropy", "gap", "lln_branch_entropy"} <= set(table[0])
    assert len((out / "analyze_heads.csv").read_text().splitlines()) == 1 + 3 * 2 * 2
    for name in ("entropy_heatmap", "gap_heatmap", "attention_examples", "compare_matrices",
                 "compare_layers", "instruments_over_training"):  # fmt: skip
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    assert "└ LLN branch" in result.output and str(out) in result.output


def test_checkpoint_mode_on_a_text_file_with_padding(runs, tmp_path) -> None:
    text = tmp_path / "held_out.txt"
    text.write_text("The cat sat on a mat while the dog ran to the park. " * 3)
    out = tmp_path / "analyze"
    result = analyze(out, f"checkpoint={runs['lln_off']}", f"text_file={text}", "max_len=16",
                     "num_sequences=8", "gap=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    lengths = data["sequences"]["lengths"]
    assert data["sequences"]["seq_len"] == 16 and lengths[:-1] == [16] * (len(lengths) - 1)
    assert 2 < lengths[-1] < 16  # the last piece is padded; instruments use its real length
    layer = data["runs"][0]["layers"][0]
    assert "gap" not in layer["per_head"] and 0 < layer["mean"]["entropy"] < math.log(16)
    assert data["sequences"]["example_text"].startswith("<s>The cat sat")
    assert not (out / "compare_matrices.png").exists()  # one run: nothing to compare
    assert not (out / "instruments_over_training.png").exists()  # logged nothing in training
    assert (out / "attention_examples.png").exists() and (out / "gap_heatmap.png").exists() is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint={missing}"], "no checkpoint at"),
        (["checkpoint={corrupt}"], "cannot load checkpoint"),
        (["checkpoint={lln}", "max_len=64"], "max_len=64 exceeds model.max_len=32 of run lln"),
        (["checkpoint=[{lln},{lln}]"], "checkpoint lists the same run twice"),
    ],
    ids=["missing", "corrupt", "positions", "twice"],
)
def test_checkpoint_mode_user_errors_are_one_line(runs, tmp_path, args, message) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    paths = {"missing": tmp_path / "nowhere", "corrupt": corrupt, "lln": runs["lln"]}
    result = analyze(tmp_path / "out", *(a.format(**paths) for a in args))
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert message in text and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# the capture is right


def tiny_model(attention: str) -> RobertaForMaskedLM:
    torch.manual_seed(0)
    options = {} if attention == "softmax" else {"constants": "paper"}
    cfg = ModelConfig(layers=2, hidden=32, heads=2, ffn=64, max_len=24, vocab_size=64)
    model = RobertaForMaskedLM(cfg, AttentionConfig(attention, options), pad_id=1)
    with torch.no_grad():  # larger q, k than the 0.02 init, so the attention is not uniform
        for layer in model.encoder.layers:
            layer.attention.qkv.weight.mul_(10.0)
    return model


def manual_qkv(model: RobertaForMaskedLM, ids, mask):
    """q, k, v per layer computed by hand from the layers' own weights."""
    encoder, out = model.encoder, []
    x = encoder.embeddings(ids, mask)
    for layer in encoder.layers:
        b, n, _ = x.shape
        qkv = layer.attention.qkv(x).view(b, n, 3, model.cfg.heads, model.cfg.head_dim)
        out.append(qkv.permute(2, 0, 3, 1, 4))
        x = layer(x, mask)
    return out


@pytest.mark.parametrize("attention", ["softmax", "lln", "lln_diag"])
def test_hooked_instruments_equal_direct_ones(attention: str) -> None:
    model = tiny_model(attention).eval()
    ids = torch.randint(5, 60, (3, 20))
    mask = torch.arange(20)[None, :] < torch.tensor([20, 13, 7])[:, None]
    captured = capture_qk(model, ids, mask, keep_v=True)
    direct = layer_instruments(model, ids, mask)
    with torch.no_grad():
        manual = manual_qkv(model, ids, mask)
    for i, (core, inputs, (q, k, _)) in enumerate(zip(attention_cores(model), captured, manual)):
        torch.testing.assert_close(inputs.q, q)
        torch.testing.assert_close(inputs.k, k)
        assert torch.equal(inputs.mask, mask)
        expected = measure(core, q, k, mask).means()
        for name, value in expected.items():
            assert direct[f"layer{i}/{name}"] == pytest.approx(value, rel=1e-6, nan_ok=True), name
        # the measured matrix is the one the layer applied: P v reproduces its output
        p = core.attention_matrix(inputs.q.double(), inputs.k.double(), mask)
        with torch.no_grad():
            out = core(inputs.q, inputs.k, inputs.v, mask)
        real = mask[:, None, :, None].expand_as(out)
        torch.testing.assert_close((p @ inputs.v.double()).float()[real], out[real], atol=1e-4,
                                   rtol=1e-4)  # fmt: skip
    assert direct["layer0/entropy"] < math.log(20) - 0.05  # the matrices are not uniform
    if attention == "lln_diag":
        assert "layer1/lln_branch_gap" in direct and "mean/lln_branch_entropy" in direct


def test_padding_is_excluded() -> None:
    """A padded sequence measures like the same sequence alone (softmax: rows are independent)."""
    model = tiny_model("softmax")
    ids = torch.randint(5, 60, (2, 20))
    mask = torch.arange(20)[None, :] < torch.tensor([20, 11])[:, None]
    cores = attention_cores(model)
    both = measure_layers(cores, capture_qk(model, ids, mask))
    alone = [measure_layers(cores, capture_qk(model, ids[b : b + 1, :n]))
             for b, n in ((0, 20), (1, 11))]  # fmt: skip
    for layer in range(2):
        for name in ("entropy", "gap", "log_var", "sigma_q"):
            mean = (alone[0][layer].per_head[name] + alone[1][layer].per_head[name]) / 2
            torch.testing.assert_close(both[layer].per_head[name], mean, rtol=1e-5, atol=1e-7)
    matrix = example_matrices(cores[0], capture_qk(model, ids, mask)[0], index=1)[""]
    assert matrix.shape == (2, 11, 11)
    torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 11, dtype=torch.float64))


def test_capture_leaves_the_model_as_it_was() -> None:
    model = tiny_model("lln").train()
    ids = torch.randint(5, 60, (2, 16))
    model.encoder(ids)
    stats = {k: v.clone() for k, v in attention_cores(model)[0].last_stats.items()}
    rng = torch.get_rng_state()
    capture_qk(model, ids[:1, :9])
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    after = attention_cores(model)[0].last_stats
    assert after.keys() == stats.keys() and all(torch.equal(after[k], stats[k]) for k in stats)
