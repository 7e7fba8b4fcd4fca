"""`llnbench glue` end to end on tiny GLUE-shaped local files: every task, metrics recomputed by
hand from the predictions the run wrote, submissions, seeds, resume, pretrained encoders, errors."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import WORDS, tiny_pretrain_args
from scipy.stats import rankdata
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.data.glue import GLUE9, TASKS, TaskSpec
from llnbench.jobs.glue import build_model
from llnbench.model.pretrained import load_pretrained
from llnbench.train import checkpoint
from llnbench.train.loop import Trainer

TINY = [
    "attention=lln", "model=tiny", "model.layers=1", "model.hidden=64", "model.heads=1",
    "model.ffn=128", "max_length=32", "trainer.batch_size=8", "trainer.epochs=2",
    "trainer.lr=1e-3", "trainer.log_every=2", "wandb.mode=disabled",
]  # fmt: skip
POSITIVE, NEGATIVE = ("good", "great", "fine"), ("bad", "awful", "poor")


def glue(*args: str):
    return CliRunner().invoke(app, ["glue", *args])


def one_line_error(result) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


# ------------------------------------------------------------------------------------------------
# Fixtures: GLUE-shaped files (train: GLUE's own TSV layout with stray quotes; dev: CSV with the
# hub's column names; MNLI mismatched dev: JSONL; test: TSV without labels)


def _sentence(rng: random.Random, positive: bool) -> str:
    start = rng.randrange(len(WORDS) - 6)
    words = WORDS[start : start + rng.randint(3, 6)]
    words.insert(rng.randrange(len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
    text = " ".join(words)
    return rng.choice(['"' + text, text + ' "quoted', text, text]) + "."


def _example(spec: TaskSpec, rng: random.Random) -> tuple[list[str], object]:
    """Texts and a label that depends on the first text's sentiment word (learnable)."""
    value = rng.random()
    texts = [_sentence(rng, value > 0.5) for _ in spec.text_columns]
    if spec.is_regression:
        return texts, round(5 * value, 2)
    return texts, min(int(value * spec.num_labels), spec.num_labels - 1)


def _rows(spec: TaskSpec, n: int, seed: int) -> list[tuple[int, list[str], object]]:
    rng = random.Random(f"{spec.name}-{seed}")
    return [(100 + i, *_example(spec, rng)) for i in range(n)]


def _write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")


def write_task(root: Path, spec: TaskSpec, n_train: int = 16, n_dev: int = 16, n_test: int = 8):
    folder = root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    text_cols = list(spec.tsv_text_columns)
    label_col = spec.tsv_label_column or "label"

    def tsv_label(label):
        return spec.label_names[label] if spec.submit_label_names else label

    rows = [[i, "genre", *t, tsv_label(y)] for i, t, y in _rows(spec, n_train, 0)]
    _write_tsv(folder / "train.tsv", ["index", "genre", *text_cols, label_col], rows)
    with (folder / "dev.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", *spec.text_columns, "label"])
        writer.writerows([[i, *t, y] for i, t, y in _rows(spec, n_dev, 1)])
    if len(spec.validation_splits) > 1:
        lines = [
            json.dumps({"idx": i, **dict(zip(spec.text_columns, t)), "label": y})
            for i, t, y in _rows(spec, n_dev, 2)
        ]
        (folder / "dev_mm.jsonl").write_text("\n".join(lines) + "\n")
    for name, seed in (("test", 3), ("test_mm", 4)):
        rows = [[i, *t] for i, t, _ in _rows(spec, n_test, seed)]
        _write_tsv(folder / f"{name}.tsv", ["index", *text_cols], rows)
    return folder


def local_args(root: Path, tmp_path: Path) -> list[str]:
    return [
        f"data.train_file={root}/%task%/train.tsv",
        f"data.validation_file={root}/%task%/dev.csv",
        f"data.validation_mismatched_file={root}/%task%/dev_mm.jsonl",
        f"data.test_file={root}/%task%/test.tsv",
        f"data.test_mismatched_file={root}/%task%/test_mm.tsv",
        f"data.cache_dir={tmp_path / 'hf'}",
    ]


def single_task_args(root: Path, tmp_path: Path, task: str) -> list[str]:
    write_task(root, TASKS[task])
    train, validation, _, test, _, cache = local_args(root, tmp_path)
    return [f"task={task}", *(a.replace("%task%", task) for a in (train, validation, test)), cache]


# ------------------------------------------------------------------------------------------------
# Metrics by hand (numpy formulas, not the library the job uses)


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    index, label, pred = (np.array([float(r[c]) for r in rows]) for c in range(3))
    return index, label, pred


def by_hand(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    if metric == "accuracy":
        return float(np.mean(p == y))
    if metric == "f1":
        return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0
    if metric == "matthews_correlation":
        denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return float((tp * tn - fp * fn) / denominator) if denominator else 0.0
    if metric == "pearson":
        return float(np.corrcoef(p, y)[0, 1])
    if metric == "spearmanr":
        return float(np.corrcoef(rankdata(p), rankdata(y))[0, 1])
    raise AssertionError(metric)


def check_seed_metrics(spec: TaskSpec, folder: Path, metrics: dict[str, float]) -> None:
    """The reported metrics equal the ones recomputed from the written predictions."""
    for i, split in enumerate(spec.validation_splits):
        _, y, p = read_predictions(folder / f"predictions-{split}.tsv")
        suffix = "" if i == 0 else "_mm"
        values = [by_hand(m, y, p) for m in spec.metrics]
        for metric, value in zip(spec.metrics, values):
            assert metrics[metric + suffix] == pytest.approx(value, abs=1e-9), (spec.name, metric)
        if len(spec.metrics) > 1:
            assert metrics["combined_score"] == pytest.approx(np.mean(values), abs=1e-9)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# Every task


def test_glue9_suite_on_local_files(tmp_path) -> None:
    root, run_dir = tmp_path / "glue", tmp_path / "run"
    for name in GLUE9:
        write_task(root, TASKS[name])
    result = glue("task=glue9", *local_args(root, tmp_path), *TINY, "trainer.epochs=1",
                  "trainer.eval_every=1", f"run_dir={run_dir}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "GLUE average" in result.output and str(run_dir) in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["tasks"]) == list(GLUE9)
    for name, summary in results["tasks"].items():
        spec = TASKS[name]
        seed = summary["seeds"]["0"]
        folder = run_dir / name / "seed0"
        check_seed_metrics(spec, folder, seed["metrics"])
        assert {"checkpoint.pt", "best.pt", "result.json"} <= {p.name for p in folder.iterdir()}
        # the reported epoch is the best evaluation by the task's metric, and its score
        history = seed["history"]
        assert [h["epoch"] for h in history] == [0.5, 1.0] and seed["steps_per_epoch"] == 2
        best = max(history, key=lambda h: h[spec.primary_metric])
        assert seed["best_epoch"] == best["epoch"]
        assert seed["metrics"][spec.primary_metric] == pytest.approx(best[spec.primary_metric])
        assert summary["score"] == seed["metrics"][spec.primary_metric]
        assert summary["primary_metric"] == spec.primary_metric
    assert results["tasks"]["mnli"]["seeds"]["0"]["metrics"].keys() >= {"accuracy", "accuracy_mm"}
    assert results["tasks"]["rte"]["recipe"] == {"lr": 1e-3, "batch_size": 8, "epochs": 1.0}
    average = results["glue_average"]
    assert average["score"] == pytest.approx(
        np.mean([s["score"] for s in results["tasks"].values()])
    )
    assert average["metric"]["mrpc"] == average["metric"]["stsb"] == "combined_score"
    # submission files: GLUE's names, index order, label names where GLUE wants them
    submission = {p.name: p for p in (run_dir / "submission").iterdir()}
    assert set(submission) == {f for t in GLUE9 for _, f in TASKS[t].submission_files}
    for path in submission.values():
        lines = path.read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 9
        assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(100, 108))
    mnli = {line.split("\t")[1] for line in submission["MNLI-mm.tsv"].read_text().splitlines()[1:]}
    assert mnli <= {"entailment", "neutral", "contradiction"}
    assert all(
        0.0 <= float(line.split("\t")[1]) <= 5.0
        for line in submission["STS-B.tsv"].read_text().splitlines()[1:]
    )
    assert {line.split("\t")[1] for line in submission["CoLA.tsv"].read_text().splitlines()[1:]} <= {
        "0", "1",
    }  # fmt: skip
    # one metrics.jsonl, every row stamped with task, seed, step and epoch; validation per epoch
    logged = rows(run_dir)
    assert all({"task", "seed", "step", "epoch"} <= row.keys() for row in logged)
    val = [(r["task"], r["epoch"]) for r in logged if "val/loss" in r]
    assert val == [(t, e) for t in GLUE9 for e in (0.5, 1.0)]


def test_seeds_mean_std_and_finished_seeds_are_reused(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = ["task=sst2_rt", "max_train_samples=24", "max_eval_samples=24", *TINY,
            "trainer.epochs=1", f"run_dir={run_dir}"]  # fmt: skip
    assert glue(*args, "trainer.seeds=[3]").exit_code == 0
    first = json.loads((run_dir / "results.json").read_text())["tasks"]["sst2_rt"]
    assert first["std"]["accuracy"] == 0.0 and first["train_examples"] == 24

    # rerun with one more seed: seed 3 is reused as it is, only seed 4 trains
    before = (run_dir / "metrics.jsonl").read_text()
    result = glue(*args, "trainer.seeds=[3,4]")
    assert result.exit_code == 0, result.output
    assert "sst2_rt seed 3: finished earlier" in result.output
    assert (run_dir / "metrics.jsonl").read_text().startswith(before)
    assert {r["seed"] for r in rows(run_dir)[before.count("\n") :]} == {4}
    summary = json.loads((run_dir / "results.json").read_text())["tasks"]["sst2_rt"]
    assert summary["seeds"]["3"] == first["seeds"]["3"] and list(summary["seeds"]) == ["3", "4"]
    accuracy = [summary["seeds"][s]["metrics"]["accuracy"] for s in ("3", "4")]
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracy))
    assert summary["std"]["accuracy"] == pytest.approx(np.std(accuracy, ddof=1))
    assert summary["score"] == summary["mean"]["accuracy"]
    assert summary["validation_examples"] == {"validation": 24}
    for seed in ("3", "4"):
        check_seed_metrics(TASKS["sst2_rt"], run_dir / "sst2_rt" / f"seed{seed}",
                           summary["seeds"][seed]["metrics"])  # fmt: skip


def _comparable(logged: list[dict]) -> list[dict]:
    timing = ("train/tokens_per_s", "train/step_time_s")
    return [{k: v for k, v in row.items() if k not in timing} for row in logged]


def test_killed_run_resumes_exactly(tmp_path, monkeypatch) -> None:
    """A run interrupted after its first checkpoint continues to the same numbers and files."""
    root = tmp_path / "glue"
    args = [*single_task_args(root, tmp_path, "rte"), *TINY, "trainer.log_every=1"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert glue(*args, f"run_dir={clean}").exit_code == 0

    original = Trainer._log

    def crash_at_step_3(self, grad_norm):  # in epoch 2, after epoch 1's checkpoint (step 2)
        row = original(self, grad_norm)
        if self.step == 3:
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(Trainer, "_log", crash_at_step_3)
    assert glue(*args, f"run_dir={killed}").exit_code == 130
    assert max(r["step"] for r in rows(killed)) == 3 and not (killed / "results.json").exists()
    monkeypatch.setattr(Trainer, "_log", original)
    result = glue(*args, f"run_dir={killed}")
    assert result.exit_code == 0 and "resuming" in result.output, result.output

    assert _comparable(rows(killed)) == _comparable(rows(clean))
    for name in ("predictions-validation.tsv", "submission/RTE.tsv"):
        assert (killed / "rte/seed0" / name).read_text() == (clean / "rte/seed0" / name).read_text()
    metrics = [
        json.loads((d / "results.json").read_text())["tasks"]["rte"] for d in (clean, killed)
    ]
    assert metrics[0]["seeds"]["0"]["metrics"] == metrics[1]["seeds"]["0"]["metrics"]
    assert metrics[0]["seeds"]["0"]["best_epoch"] == metrics[1]["seeds"]["0"]["best_epoch"]


# ------------------------------------------------------------------------------------------------
# From a pretraining run


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pretrain")
    run_dir = tmp / "run"
    result = CliRunner().invoke(app, ["pretrain", *tiny_pretrain_args(tmp, run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_encoder_comes_from_the_pretraining_run(pretrained) -> None:
    pre = load_pretrained(str(pretrained))
    saved = torch.load(pretrained / "checkpoint.pt", weights_only=True)["model"]
    model = build_model(TASKS["sst2"], pre.model, pre.attention, 1, pre.encoder_state)
    for name in ("embeddings.words.weight", "layers.0.attention.qkv.weight"):
        assert torch.equal(model.encoder.state_dict()[name], saved[f"encoder.{name}"])
    assert pre.attention.name == "lln" and pre.model.hidden == 64


def test_finetune_from_pretraining_run(pretrained, tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = [*single_task_args(tmp_path / "glue", tmp_path, "sst2"), f"pretrained={pretrained}",
            "max_length=32", "trainer.epochs=1", "trainer.batch_size=8", "wandb.mode=disabled"]  # fmt: skip
    result = glue(*args, f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["init"] == {"pretrained": str(pretrained / "checkpoint.pt"), "step": 6}
    assert results["attention"]["name"] == "lln" and results["model"]["hidden"] == 64
    assert results["tasks"]["sst2"]["recipe"] == {"lr": 1e-5, "batch_size": 8, "epochs": 1.0}
    ran = yaml.safe_load((run_dir / "config.yaml").read_text())  # what was derived, resolved
    assert ran["attention"]["name"] == "lln" and ran["model"]["hidden"] == 64
    assert ran["task"]["recipes"] == {"sst2": {"lr": 1e-5, "batch_size": 8, "epochs": 1.0}}
    assert ran["task"]["lr"] == 1e-5 and ran["trainer"]["seeds"] == [0]
    assert ran["tokenizer"] == results["tokenizer"]

    result_file = run_dir / "sst2" / "seed0" / "result.json"
    result_file.write_bytes(b'{"metrics": \xff')  # garbled: the rerun names it and the way out
    text = one_line_error(glue(*args, f"run_dir={run_dir}"))
    assert f"{result_file} is damaged" in text and "delete it" in text
    result_file.unlink()  # the way out: scored again from the seed's checkpoints
    result = glue(*args, f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "results.json").read_text())
    seed0 = results["tasks"]["sst2"]["seeds"]["0"]["metrics"]
    assert again["tasks"]["sst2"]["seeds"]["0"]["metrics"] == seed0
    text = one_line_error(glue(*args, "trainer.lr=1e-3", f"run_dir={run_dir}"))
    assert "holds a glue run of other settings (task.lr: ran 1e-05, now 0.001" in text

    for override, message in [
        ("attention=softmax", "attention.name: checkpoint 'lln' vs requested 'softmax'"),
        ("model.hidden=128", "model.hidden: checkpoint 64 vs requested 128"),
        ("max_length=64", "max_length=64 exceeds model.max_len=32"),
    ]:
        text = one_line_error(glue(*args, override, f"run_dir={tmp_path / 'other'}"))
        assert message in text, text


def test_checkpoint_of_unknown_attention_is_one_line(pretrained, tmp_path) -> None:
    state = checkpoint.load(pretrained)
    state["config"]["attention"]["name"] = "lnn"
    checkpoint.save(tmp_path / "foreign.pt", state)
    text = one_line_error(glue("task=sst2_rt", f"pretrained={tmp_path / 'foreign.pt'}"))
    assert "unknown attention 'lnn'; allowed: " in text and "foreign.pt" in text


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def test_unknown_task_is_one_line() -> None:
    text = one_line_error(glue("task=mnli2", *TINY))
    assert "Could not find 'task/mnli2'; allowed: all, cola, glue9, mnli" in text
    text = one_line_error(glue("task.name=mnli2", *TINY))
    assert "unknown task 'mnli2'; allowed: cola, sst2" in text and "glue9" in text


def test_missing_label_column_names_file_and_columns(tmp_path) -> None:
    args = single_task_args(tmp_path / "glue", tmp_path, "rte")
    train = tmp_path / "glue" / "rte" / "train.tsv"
    _write_tsv(train, ["index", "sentence1", "sentence2"], [[0, "a", "b"], [1, "c", "d"]])
    text = one_line_error(glue(*args, *TINY, f"run_dir={tmp_path / 'run'}"))
    assert str(train) in text and "missing label column 'label'" in text
    assert "columns found: ['index', 'sentence1', 'sentence2']" in text
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written


def test_offline_hub_task_names_the_options(tmp_path) -> None:
    text = one_line_error(glue("task=sst2", *TINY, f"run_dir={tmp_path / 'run'}"))
    assert "task=sst2_rt" in text and "data.source=local" in text


def test_no_pretrained_and_no_attention_is_one_line() -> None:
    text = one_line_error(glue("task=sst2_rt", "wandb.mode=disabled"))
    assert "no pretrained=PATH" in text and "attention=NAME" in text


def test_suite_with_plain_local_files_is_refused(tmp_path) -> None:
    text = one_line_error(glue("task=all", *TINY, f"data.train_file={tmp_path}/train.tsv"))
    assert "put %task% in local paths" in text
