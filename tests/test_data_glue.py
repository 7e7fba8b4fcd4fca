"""GLUE: the task table, loading from local files / the embedded stand-in / (faked) hub, metrics
against hand-computed values, submission files, encoding and padding."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math
import re
from pathlib import Path

import pytest
import torch

from llnbench.data.batching import pad_batch
from llnbench.data.glue import (
    GLUE9,
    PAPER_TASKS,
    TASKS,
    GlueDataConfig,
    compute_metrics,
    encode_task,
    get_task,
    load_task,
    resolve_tasks,
    write_submission,
)
from llnbench.data.tokenizer import load_tokenizer
from llnbench.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def local(tmp_path: Path, **files) -> GlueDataConfig:
    return GlueDataConfig(source="local", cache_dir=str(tmp_path / "hf"), **files)


# ------------------------------------------------------------------------------------------------
# The table


def test_task_table():
    assert set(TASKS) == {*GLUE9, "sst2_rt"}
    assert PAPER_TASKS == ("mnli", "qnli", "qqp", "sst2")
    assert [t.name for t in resolve_tasks("all")] == list(PAPER_TASKS)
    assert [t.name for t in resolve_tasks("glue9")] == list(GLUE9)
    files = {f for t in TASKS.values() for _, f in t.submission_files}
    assert files == {
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
        "QNLI.tsv", "RTE.tsv", "WNLI.tsv",
    }  # fmt: skip
    mnli = get_task("mnli")
    assert mnli.validation_splits == ("validation_matched", "validation_mismatched")
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert get_task("rte").label_names == get_task("qnli").label_names
    assert get_task("wnli").label_names == ("not_entailment", "entailment")  # flipped vs RTE
    assert [t.name for t in TASKS.values() if t.is_regression] == ["stsb"]
    assert get_task("cola").primary_metric == "matthews_correlation"
    assert get_task("mrpc").primary_metric == "combined_score"
    assert get_task("sst2_rt").test_splits == () and "NOT SST-2" in get_task("sst2_rt").description
    with pytest.raises(ConfigError, match="unknown task 'mnli2'; allowed: cola, sst2"):
        get_task("mnli2")
    with pytest.raises(ConfigError, match="glue9"):
        resolve_tasks("glue10")


# ------------------------------------------------------------------------------------------------
# The embedded stand-in


def test_sst2_rt_split_sizes_and_class_balance():
    data = load_task(get_task("sst2_rt"))  # the default source (hub) means embedded here
    train, val = data["train"], data["validation"]
    assert (len(train), len(val)) == (9511, 1057)
    assert (sum(train["label"]), sum(val["label"])) == (4702, 540)  # positives
    assert sum(train["label"]) + sum(val["label"]) == 5242  # 5,242 positive, 5,326 negative
    assert not set(train["idx"]) & set(val["idx"])
    assert all((s > 0) == bool(lab) for s, lab in zip(val["score"], val["label"]))
    assert 0.0 not in set(train["score"])
    first = train[0]
    assert first["idx"] == 1 and first["label"] == 1
    assert first["sentence"].startswith("The Rock is destined to be the 21st Century's new")
    assert load_task(get_task("sst2_rt"))["validation"]["idx"] == val["idx"]  # seeded, fixed
    with pytest.raises(ConfigError, match="no embedded data; embedded tasks: sst2_rt"):
        load_task(get_task("sst2"), GlueDataConfig(source="embedded"))


# ------------------------------------------------------------------------------------------------
# Local files


MNLI_HEADER = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label"


def test_local_mnli_original_tsv_with_stray_quotes(tmp_path):
    train = write(
        tmp_path / "train.tsv",
        [
            MNLI_HEADER,
            '0\t1\t1e\tfiction\tHe said "hello and left.\tHe spoke.\tentailment',
            "1\t2\t2n\tgov\tNA\tnull\tneutral",
            "2\t3\t3c\tgov\tThe cat sat.\tNo cat sat.\tcontradiction",
        ],
    )
    dev_m = write(
        tmp_path / "dev_m.tsv", [MNLI_HEADER, '7\t1\t1e\tgov\t"Quoted" start\tB.\tneutral']
    )
    dev_mm = write(tmp_path / "dev_mm.tsv", [MNLI_HEADER, "9\t1\t1e\tgov\tA\tB\tcontradiction"])
    test_m = write(
        tmp_path / "test_m.tsv",
        ["index\tpromptID\tpairID\tgenre\tsentence1\tsentence2", '5\t1\t1\tgov\tX "y\tZ'],
    )
    cfg = local(
        tmp_path,
        train_file=train,
        validation_file=dev_m,
        validation_mismatched_file=dev_mm,
        test_file=test_m,
    )
    data = load_task(get_task("mnli"), cfg)
    assert list(data) == ["train", "validation_matched", "validation_mismatched", "test_matched"]
    tr = data["train"]
    assert tr.column_names == ["premise", "hypothesis", "label", "idx"]
    assert tr["premise"] == ['He said "hello and left.', "NA", "The cat sat."]  # verbatim
    assert tr["hypothesis"][1] == "null"
    assert tr["label"] == [0, 1, 2]
    assert data["validation_matched"][0] == {
        "premise": '"Quoted" start',
        "hypothesis": "B.",
        "label": 1,
        "idx": 7,
    }
    assert data["validation_mismatched"]["label"] == [2]
    assert data["test_matched"][0] == {"premise": 'X "y', "hypothesis": "Z", "label": -1, "idx": 5}


def test_local_cola_original_tsv_has_no_header(tmp_path):
    """CoLA's train/dev.tsv are header-less (source, label, author mark, sentence); test.tsv has one."""
    train = write(
        tmp_path / "train.tsv",
        ["gj04\t1\t\tOur friends won't buy this analysis.", 'gj04\t0\t*\tThey "drank the pub.'],
    )
    dev = write(tmp_path / "dev.tsv", ["cj99\t1\t\tThe more we study, the less we know."])
    test = write(tmp_path / "test.tsv", ["id\tsentence", "0\tBill whistled past the house."])
    cfg = local(tmp_path, train_file=train, validation_file=dev, test_file=test)
    data = load_task(get_task("cola"), cfg)
    assert data["train"]["sentence"] == [
        "Our friends won't buy this analysis.",
        'They "drank the pub.',
    ]
    assert data["train"]["label"] == [1, 0] and data["validation"]["label"] == [1]
    assert data["test"][0] == {"sentence": "Bill whistled past the house.", "label": -1, "idx": 0}


def test_local_csv_json_and_overrides(tmp_path):
    spec = get_task("stsb")
    csv = write(tmp_path / "t.csv", ["a,b,sim", '"One, two",Three,4.5', "Four,Five,0.25"])
    jsonl = write(
        tmp_path / "v.jsonl",
        ['{"a": "x", "b": "y", "sim": 1.5}', '{"a": "p", "b": null, "sim": 3}'],
    )
    cfg = local(
        tmp_path,
        train_file=csv,
        validation_file=jsonl,
        text_columns=["a", "b"],
        label_column="sim",
    )
    data = load_task(spec, cfg)
    assert data["train"]["sentence1"] == ["One, two", "Four"]
    assert data["train"]["label"] == [4.5, 0.25]
    assert data["validation"]["sentence2"] == ["y", ""]
    assert data["validation"]["idx"] == [0, 1]  # row numbers when the file has no index column
    sst = write(tmp_path / "sst.tsv", ["sentence\tlabel", "great\t1", "awful\t0"])
    out = load_task(get_task("sst2"), local(tmp_path, train_file=sst, validation_file=sst))
    assert out["train"]["label"] == [1, 0]


def test_local_errors_name_file_column_and_allowed_values(tmp_path):
    spec = get_task("rte")
    bad_cols = write(tmp_path / "bad.tsv", ["index\tpremise\tlabel", "0\tA\tentailment"])
    with pytest.raises(DataError) as info:
        load_task(spec, local(tmp_path, train_file=bad_cols, validation_file=bad_cols))
    msg = str(info.value)
    assert bad_cols in msg and "['sentence1', 'sentence2']" in msg
    assert "['index', 'premise', 'label']" in msg

    no_label = write(tmp_path / "nolabel.tsv", ["sentence1\tsentence2", "A\tB"])
    with pytest.raises(DataError, match=r"missing label column 'label'.*sentence1"):
        load_task(spec, local(tmp_path, train_file=no_label, validation_file=no_label))

    bad_label = write(tmp_path / "badlabel.tsv", ["sentence1\tsentence2\tlabel", "A\tB\tmaybe"])
    with pytest.raises(DataError, match=r"'maybe' is not valid.*entailment, not_entailment, 0, 1"):
        load_task(spec, local(tmp_path, train_file=bad_label, validation_file=bad_label))

    unlabelled = write(tmp_path / "unl.tsv", ["sentence1\tsentence2\tlabel", "A\tB\t-1"])
    with pytest.raises(DataError, match="−1"):
        load_task(spec, local(tmp_path, train_file=unlabelled, validation_file=unlabelled))

    missing = tmp_path / "missing.tsv"
    with pytest.raises(DataError, match=re.escape(f"'{missing}' does not exist")):
        load_task(spec, local(tmp_path, train_file=str(missing), validation_file=str(missing)))
    with pytest.raises(ConfigError, match=re.escape("needs data.validation_file")):
        load_task(spec, local(tmp_path, train_file=bad_cols))
    with pytest.raises(
        ConfigError, match=re.escape("no split for data.validation_mismatched_file")
    ):
        load_task(spec, local(tmp_path, train_file="a", validation_file="b",
                              validation_mismatched_file="c"))  # fmt: skip
    with pytest.raises(ConfigError, match="needs 2"):
        load_task(spec, local(tmp_path, train_file=no_label, validation_file=no_label,
                              text_columns=["sentence1"]))  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("unknown data.source 'disk'")):
        load_task(spec, GlueDataConfig(source="disk"))


# ------------------------------------------------------------------------------------------------
# Hub (faked: tests never touch the network)


def test_hub_offline_is_one_line_with_alternatives(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_task(get_task("sst2"))
    msg = str(info.value)
    assert "\n" not in msg and "nyu-mll/glue" in msg and "HF_DATASETS_OFFLINE" in msg
    assert "task=sst2_rt" in msg and "data.source=local" in msg


def test_hub_splits_are_normalised(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features(
        {
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
            "idx": Value("int32"),
        }
    )

    def split(labels):
        n = len(labels)
        rows = {
            "premise": ["p"] * n,
            "hypothesis": ["h"] * n,
            "label": labels,
            "idx": list(range(n)),
        }
        return Dataset.from_dict(rows, features=features)

    fake = DatasetDict(
        train=split([0, 1, 2]),
        validation_matched=split([2]),
        validation_mismatched=split([1]),
        test_matched=split([-1]),
        test_mismatched=split([-1, -1]),
    )
    seen = {}

    def load(path, name=None, **kwargs):
        seen["args"] = (path, name)
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load)
    data = load_task(get_task("mnli"))
    assert seen["args"] == ("nyu-mll/glue", "mnli")
    assert list(data) == list(get_task("mnli").splits)
    assert data["train"]["label"] == [0, 1, 2]
    assert data["train"].features["label"] == Value("int64")
    assert data["test_mismatched"]["label"] == [-1, -1]


# ------------------------------------------------------------------------------------------------
# Metrics


def test_matthews_and_accuracy_by_hand():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 0, 0, 0, 1]  # TP 3, FN 1, TN 3, FP 1
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 − 1) / sqrt(4⁴) = 0.5
    assert compute_metrics(get_task("cola"), preds, labels) == {"matthews_correlation": 0.5}
    assert compute_metrics(get_task("sst2"), preds, labels) == {"accuracy": 0.75}
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5]])  # argmax 1, 0, 1
    assert compute_metrics(get_task("sst2"), logits, torch.tensor([1, 0, 0])) == {
        "accuracy": pytest.approx(2 / 3)
    }


def test_f1_and_combined_score_by_hand():
    labels = [1, 1, 0, 0, 1]
    preds = [1, 0, 0, 1, 1]  # TP 2, FP 1, FN 1 → F1 = 2·2 / (2·2 + 1 + 1) = 2/3; accuracy 3/5
    out = compute_metrics(get_task("mrpc"), preds, labels)
    assert out == {
        "f1": pytest.approx(2 / 3),
        "accuracy": pytest.approx(0.6),
        "combined_score": pytest.approx((2 / 3 + 0.6) / 2),
    }
    assert set(compute_metrics(get_task("qqp"), preds, labels)) == {
        "accuracy",
        "f1",
        "combined_score",
    }


def test_pearson_spearman_on_three_points_by_hand():
    # x = 1, 2, 3 and y = 1, 3, 2: deviations (−1, 0, 1), (−1, 1, 0) → r = 1 / sqrt(2·2) = 0.5;
    # the values are their own ranks, so Spearman is 0.5 too
    out = compute_metrics(get_task("stsb"), torch.tensor([[1.0], [2.0], [3.0]]), [1.0, 3.0, 2.0])
    assert out == {
        "pearson": pytest.approx(0.5),
        "spearmanr": pytest.approx(0.5),
        "combined_score": pytest.approx(0.5),
    }
    constant = compute_metrics(get_task("stsb"), [2.0, 2.0, 2.0], [1.0, 3.0, 2.0])
    assert math.isnan(constant["pearson"])
    with pytest.raises(DataError, match="test split cannot be scored"):
        compute_metrics(get_task("sst2"), [0, 1], [-1, -1])


# ------------------------------------------------------------------------------------------------
# Submission files


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_submission_files(tmp_path):
    mnli = get_task("mnli")
    logits = torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    path = write_submission(mnli, "test_mismatched", logits, [2, 0, 1], tmp_path)
    assert path.name == "MNLI-mm.tsv"
    assert read_rows(path) == [
        ["index", "prediction"],
        ["0", "entailment"],
        ["1", "neutral"],
        ["2", "contradiction"],
    ]
    stsb = write_submission(get_task("stsb"), "test", [-0.5, 2.3456, 7.0], [0, 1, 2], tmp_path)
    assert [r[1] for r in read_rows(stsb)[1:]] == ["0.000", "2.346", "5.000"]
    cola = write_submission(get_task("cola"), "test", [1, 0], [0, 1], tmp_path)
    assert cola.name == "CoLA.tsv" and read_rows(cola)[1:] == [["0", "1"], ["1", "0"]]
    qnli = write_submission(get_task("qnli"), "test", [1], [0], tmp_path)
    assert read_rows(qnli)[1] == ["0", "not_entailment"]
    with pytest.raises(ConfigError, match="allowed: test_matched, test_mismatched"):
        write_submission(mnli, "test", [0], [0], tmp_path)
    with pytest.raises(ConfigError, match="sst2_rt"):
        write_submission(get_task("sst2_rt"), "test", [0], [0], tmp_path)


# ------------------------------------------------------------------------------------------------
# Encoding and padding


def test_encode_pairs_and_pad_batch(tmp_path, tok):
    spec = get_task("rte")
    rows = ["index\tsentence1\tsentence2\tlabel", "0\tHello world\tHow are you?\tentailment",
            "1\t" + "long " * 50 + "\tshort\tnot_entailment"]  # fmt: skip
    path = write(tmp_path / "rte.tsv", rows)
    data = load_task(spec, local(tmp_path, train_file=path, validation_file=path))
    enc = encode_task(data["train"], spec, tok, max_length=16)
    assert len(enc) == 2
    first = enc[0]
    bos, eos = tok.bos_id, tok.eos_id
    assert first["input_ids"] == [bos, 15496, 995, eos, eos, 2437, 389, 345, 30, eos]
    assert (first["label"], first["idx"]) == (0, 0)
    assert len(enc[1]["input_ids"]) == 16  # truncated, the long side first
    assert enc[1]["input_ids"][-3:] == [eos, *tok.encode("short"), eos]

    batch = pad_batch([enc[0], enc[1]], pad_id=tok.pad_id)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, 10:].tolist() == [tok.pad_id] * 6
    assert batch["attention_mask"][0].tolist() == [1] * 10 + [0] * 6
    assert batch["attention_mask"][1].sum().item() == 16
    assert batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    assert batch["idx"].tolist() == [0, 1]

    single = encode_task(load_task(get_task("sst2_rt"))["validation"].select(range(4)),
                         get_task("sst2_rt"), tok, max_length=128)  # fmt: skip
    assert all(ids[0] == bos and ids[-1] == eos and eos not in ids[1:-1] for ids in
               (single[i]["input_ids"] for i in range(4)))  # fmt: skip
    reg = pad_batch([{"input_ids": [bos, eos], "label": 3.5, "idx": 4}], pad_id=tok.pad_id)
    assert reg["labels"].dtype == torch.float32 and reg["labels"].tolist() == [3.5]
