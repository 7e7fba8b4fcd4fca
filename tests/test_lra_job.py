"""`llnbench lra` end to end at tiny sizes: files, accuracy recomputed from the predictions the run
wrote, seeds, speed and memory, exact resume, the report's LRA section, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.reporting.discover import Run
from llnbench.reporting.lra import lra_section
from llnbench.train.loop import Trainer

TINY = [
    "data.max_length=32", "data.min_length=6", "data.train_size=48", "data.validation_size=16",
    "data.test_size=16", "data.workers=1", "model.layers=1", "trainer.batch_size=8",
    "trainer.max_steps=6", "trainer.log_every=2", "trainer.eval_every=3", "wandb.mode=disabled",
]  # fmt: skip


def lra(*args: str):
    return CliRunner().invoke(app, ["lra", *args])


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def predictions(path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64)
    return table[:, 1], table[:, 2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLNBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_listops_end_to_end_with_two_seeds(tmp_path, cache) -> None:
    run_dir = tmp_path / "run"
    result = lra("task=listops", "attention=lln", "trainer.seeds=[0,1]", *TINY,
                 f"run_dir={run_dir}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "majority class" in result.output and "working memory" in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["job"] == "lra" and results["task"] == "listops" and results["seq_len"] == 32
    assert results["model"]["max_len"] == 32 and results["model"]["vocab_size"] == 17
    tests = []
    for seed in ("0", "1"):
        folder = run_dir / f"seed{seed}"
        entry = results["seeds"][seed]
        for split, key in (("validation", "accuracy"), ("test", "accuracy_test")):
            labels, predicted = predictions(folder / f"predictions-{split}.tsv")
            assert len(labels) == 16
            assert entry["metrics"][key] == pytest.approx(float((labels == predicted).mean()))
        tests.append(entry["metrics"]["accuracy_test"])
        assert entry["steps_per_s"] >= entry["steps_per_s_median"] > 0 and entry["steps"] == 6
        assert {"checkpoint.pt", "best.pt", "result.json"} <= {p.name for p in folder.iterdir()}
    assert results["test_accuracy"] == pytest.approx(np.mean(tests))
    assert results["test_accuracy_std"] == pytest.approx(np.std(tests, ddof=1))
    assert 0 < results["majority_accuracy"] < 1 and results["memory_mib"] > 0
    assert results["memory_batch_shape"][0] == 8
    logged = rows(run_dir)
    assert {r["seed"] for r in logged} == {0, 1} and any("val/accuracy_test" in r for r in logged)
    assert (run_dir / "lra_curves.png").stat().st_size > 0
    assert (run_dir / "config.yaml").read_text().startswith("task: listops")


def test_pathfinder32_runs_at_its_fixed_length(tmp_path, cache) -> None:
    run_dir = tmp_path / "run"
    result = lra("task=pathfinder32", "attention=performer", "data.train_size=16",
                 "data.validation_size=8", "data.test_size=8", "model.layers=1",
                 "trainer.batch_size=8", "trainer.max_steps=2", "trainer.eval_every=2",
                 "wandb.mode=disabled", f"run_dir={run_dir}")  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["seq_len"] == 1025 and results["model"]["vocab_size"] == 258
    assert results["memory_batch_shape"] == [8, 1025]


def _comparable(logged: list[dict]) -> list[dict]:
    timing = ("train/tokens_per_s", "train/step_time_s")
    return [{k: v for k, v in row.items() if k not in timing} for row in logged]


def test_interrupted_run_resumes_exactly(tmp_path, cache, monkeypatch) -> None:
    args = ["attention=lara", *TINY, "trainer.log_every=1"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert lra(*args, f"run_dir={clean}").exit_code == 0
    original = Trainer._log

    def crash_at_step_4(self, grad_norm):  # after the checkpoint at step 3
        row = original(self, grad_norm)
        if self.step == 4:
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(Trainer, "_log", crash_at_step_4)
    assert lra(*args, f"run_dir={killed}").exit_code == 130
    assert not (killed / "results.json").exists()
    monkeypatch.setattr(Trainer, "_log", original)
    result = lra(*args, f"run_dir={killed}")
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert _comparable(rows(killed)) == _comparable(rows(clean))
    for name in ("predictions-validation.tsv", "predictions-test.tsv"):
        assert (killed / "seed0" / name).read_text() == (clean / "seed0" / name).read_text()
    done = [json.loads((d / "results.json").read_text()) for d in (clean, killed)]
    assert done[0]["seeds"]["0"]["metrics"] == done[1]["seeds"]["0"]["metrics"]


def test_another_attention_in_the_same_run_dir_is_refused(tmp_path, cache) -> None:
    run_dir = tmp_path / "run"
    assert lra("attention=softmax", *TINY, f"run_dir={run_dir}").exit_code == 0
    result = lra("attention=lln", *TINY, f"run_dir={run_dir}")
    assert result.exit_code == 2 and "attention.name" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["task=nope"],
            "unknown task 'nope' for llnbench lra; allowed: listops, pathfinder32, pathfinder64",
        ),
        (["task=sst2"], "unknown task 'sst2' for llnbench lra"),  # a GLUE task is no LRA task
        (
            ["data.max_length=60", "data.min_length=100"],
            "data.max_length=60 is too short for task listops",
        ),
        (
            ["task=pathfinder32", "data.max_length=256"],
            "too short for task pathfinder32: its sequences are 1024 pixels",
        ),
        (["attention=nope"], "Could not find 'attention/nope'; allowed:"),
        (["model.pooling=max"], "unknown model.pooling 'max'; allowed: cls, mean"),
        (["task=pathfinder32", "data.difficulty=extreme"], "unknown data.difficulty 'extreme'"),
    ],
    ids=[
        "unknown-task",
        "glue-task",
        "listops-length",
        "pathfinder-length",
        "attention",
        "pooling",
        "difficulty",
    ],
)
def test_bad_input_is_one_line(tmp_path, cache, args: list[str], message: str) -> None:
    result = lra(*args, "wandb.mode=disabled", f"run_dir={tmp_path / 'run'}")
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert message in text and len(text.splitlines()) == 1 and "Traceback" not in text
    assert not (tmp_path / "run").exists()  # nothing written


def test_glue_keeps_its_task_group() -> None:
    result = CliRunner().invoke(app, ["glue", "task=sst2_rt", "--print-config"])
    assert result.exit_code == 0 and "name: sst2_rt" in result.output
    listed = CliRunner().invoke(app, ["glue", "task=listops", "attention=lln"])
    assert listed.exit_code == 2 and "Could not find 'task/listops'" in listed.output


# ------------------------------------------------------------------------------------------------
# The report


def lra_run(tmp_path, name: str, attention: str, accuracy: float, speed: float, memory) -> Run:
    folder = tmp_path / name
    folder.mkdir()
    results = {
        "job": "lra", "task": "listops", "seq_len": 256, "attention": {"name": attention},
        "test_accuracy": accuracy, "test_accuracy_std": 0.01, "validation_accuracy": accuracy,
        "validation_accuracy_std": 0.0, "seed_list": [0, 1], "steps_per_s": speed,
        "memory_mib": memory, "majority_accuracy": 0.17, "device": "cpu", "precision": "fp32",
        "model": {"name": "lra", "layers": 2, "hidden": 64, "heads": 2}, "batch_size": 32,
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    return Run(folder, "lra", results)


def test_report_section_has_one_point_per_mechanism_and_the_published_averages(tmp_path) -> None:
    runs = [
        lra_run(tmp_path, "old-lln", "lln", 0.20, 2.0, 60.0),
        lra_run(tmp_path, "softmax", "softmax", 0.36, 1.5, 120.0),
        lra_run(tmp_path, "lln", "lln", 0.35, 2.2, 70.0),  # newer: replaces old-lln
        lra_run(tmp_path, "lara", "lara", 0.34, 1.0, None),  # memory not measured
    ]
    out = tmp_path / "report"
    out.mkdir()
    text, csv_rows, missing = lra_section(runs, out)
    table_rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in table_rows] == ["| softmax", "| lln", "| lara"]
    assert "| 36.0 ± 1.0 | 36.0 | 2 | 1.50 | — | 120.0 | 59.08 |" in table_rows[0]
    assert "| 59.12 |" in table_rows[2] and "| — |" in table_rows[1]  # LARA: lara, not lln
    assert "Older runs of the same mechanisms, not shown: old-lln" in text
    assert len(csv_rows) == 3
    assert missing == ["no `llnbench lra` runs of lln_diag, performer for listops at N=256"]
    assert (out / "lra_0_listops_256.png").stat().st_size > 0


def test_speed_is_the_fastest_and_the_median_logging_interval() -> None:
    from llnbench.jobs.lra import steps_per_second

    logged = [{"seed": 0, "train/step_time_s": t} for t in (0.5, 0.1, 0.3)]
    logged += [{"seed": 1, "train/step_time_s": 9.0}, {"seed": 0, "val/accuracy": 0.5}]
    speed = steps_per_second(logged, 0)
    assert speed["best"] == pytest.approx(10.0) and speed["median"] == pytest.approx(1 / 0.3)
    assert steps_per_second(logged, 2) == {"best": None, "median": None}


def test_report_rows_name_their_data_and_difficulties_never_share_a_table(tmp_path) -> None:
    runs = []
    for name, difficulty in (("easy", "easy"), ("hard", "hard")):
        run = lra_run(tmp_path, name, "lln", 0.5, 1.0, 10.0)
        run.results.update(task="pathfinder32", seq_len=1025, difficulty=difficulty,
                           data_label=f"Pathfinder {difficulty}", pooling="mean")  # fmt: skip
        runs.append(run)
    out = tmp_path / "report"
    out.mkdir()
    text, csv_rows, _ = lra_section(runs, out)
    assert "### pathfinder32, N = 1025 (incl. [CLS]), Pathfinder easy" in text
    assert "### pathfinder32, N = 1025 (incl. [CLS]), Pathfinder hard" in text
    assert "| lln | Pathfinder hard | mean |" in text and "Older runs" not in text
    assert {row["difficulty"] for row in csv_rows} == {"easy", "hard"}


def test_config_yaml_and_print_config_state_what_ran(tmp_path, cache) -> None:
    import yaml

    run_dir = tmp_path / "run"
    assert lra(*TINY, f"run_dir={run_dir}").exit_code == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert saved["model"]["max_len"] == results["model"]["max_len"] == 32
    assert saved["model"]["vocab_size"] == results["model"]["vocab_size"] == 17
    assert saved["model"]["pooling"] == "mean" and saved["trainer"]["lr"] == 1e-3
    assert saved["trainer"]["betas"] == [0.9, 0.999] and saved["trainer"]["clip_norm"] == 0
    assert saved["data"]["max_depth"] == 10 and saved["data"]["validation_size"] == 16
    printed = lra(*TINY, f"run_dir={run_dir}", "--print-config")
    assert yaml.safe_load(printed.output) == saved


def test_a_garbled_seed_result_is_one_line_with_the_way_out(tmp_path, cache) -> None:
    run_dir = tmp_path / "run"
    assert lra(*TINY, f"run_dir={run_dir}").exit_code == 0
    (run_dir / "seed0" / "result.json").write_bytes(b'{"metrics": \xff')
    result = lra(*TINY, f"run_dir={run_dir}")
    text = result.output.strip()
    assert result.exit_code == 2 and "Traceback" not in text
    error = [line for line in text.splitlines() if "error" in line]
    assert len(error) == 1 and error[0].startswith("llnbench: error:")
    assert "seed0/result.json is damaged" in error[0] and "delete it" in error[0]


def test_mean_pooling_ignores_padding() -> None:
    import torch

    from llnbench.model.roberta import ModelConfig, RobertaForSequenceClassification
    from llnbench.schema import AttentionConfig

    cfg = ModelConfig(layers=1, hidden=16, heads=2, ffn=32, max_len=12, vocab_size=20,
                      pooling="mean")  # fmt: skip
    model = RobertaForSequenceClassification(cfg, AttentionConfig("softmax"), 0, 3).eval()
    ids = torch.tensor([[1, 5, 6, 7, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    _, padded = model(ids, attention_mask=mask)
    _, alone = model(ids[:, :4], attention_mask=mask[:, :4])
    assert torch.allclose(padded, alone, atol=1e-6)
    cls = RobertaForSequenceClassification(
        ModelConfig(**{**cfg.__dict__, "pooling": "cls"}), AttentionConfig("softmax"), 0, 3
    ).eval()
    cls.load_state_dict(model.state_dict())
    assert not torch.allclose(cls(ids, attention_mask=mask)[1], padded)
