"""★ The GLUE task table, loading (hub / local files / embedded stand-in), metrics, submission files
and the tokenising of a split (its batches: ``llnbench.data.batching``).

Every loader returns the same shape: the task's text columns (canonical names from the table),
``label`` (int, float for STS-B, −1 in test splits) and ``idx`` (for submission files).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llnbench.data import MOVIE_REVIEWS_ASSET, read_asset
from llnbench.data.batching import EncodedSplit
from llnbench.data.hub import require_hub
from llnbench.errors import ConfigError, DataError, one_of

HUB_DATASET = "nyu-mll/glue"
OFFLINE_FLAGS = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE"
SOURCES = ("hub", "local", "embedded")
OFFLINE_WAY_OUT = (
    "use task=sst2_rt (embedded SST-2 stand-in) or data.source=local with data.train_file=… "
    "data.validation_file=…"
)
INDEX_COLUMNS = ("idx", "index", "Index", "id")  # tried in order when the file has one


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: where its data is, which columns, how it is scored and submitted."""

    name: str
    hub_config: str | None  # None: embedded data only (the sst2_rt stand-in)
    text_columns: tuple[str, ...]  # 1 (single sentence) or 2 (pair)
    num_labels: int  # 1 = regression (stsb)
    metrics: tuple[str, ...]
    primary_metric: str  # picks the best checkpoint; `combined_score` where GLUE has two numbers
    label_names: tuple[str, ...] = ()
    validation_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    submission_files: tuple[tuple[str, str], ...] = ()  # (test split, GLUE file name)
    submit_label_names: bool = False  # MNLI/QNLI/RTE submissions use names, others ids
    tsv_text_columns: tuple[str, ...] = ()  # the original GLUE TSV names, tried after the hub's
    tsv_label_column: str | None = None
    # CoLA's original train/dev TSVs have no header row: their columns, in order
    tsv_headerless_columns: tuple[str, ...] = ()
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.validation_splits, *self.test_splits)

    def submission_file(self, split: str) -> str:
        files = dict(self.submission_files)
        if split not in files:
            raise one_of(f"test split of task {self.name}", split, list(files) or ["(none)"])
        return files[split]


_ACC = ("accuracy",)
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "cola", "cola", ("sentence",), 2, ("matthews_correlation",), "matthews_correlation",
            ("unacceptable", "acceptable"), submission_files=(("test", "CoLA.tsv"),),
            tsv_text_columns=("sentence",), tsv_label_column="label",
            tsv_headerless_columns=("source", "label", "author_label", "sentence"),
            description="CoLA: grammatical acceptability",
        ),
        TaskSpec(
            "sst2", "sst2", ("sentence",), 2, _ACC, "accuracy", ("negative", "positive"),
            submission_files=(("test", "SST-2.tsv"),), tsv_text_columns=("sentence",),
            description="SST-2: movie-review sentiment",
        ),
        TaskSpec(
            "mrpc", "mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy"), "combined_score",
            ("not_equivalent", "equivalent"), submission_files=(("test", "MRPC.tsv"),),
            tsv_text_columns=("#1 String", "#2 String"), tsv_label_column="Quality",
            description="MRPC: paraphrase",
        ),
        TaskSpec(
            "stsb", "stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"),
            "combined_score", submission_files=(("test", "STS-B.tsv"),),
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="score",
            description="STS-B: similarity 0-5 (regression)",
        ),
        TaskSpec(
            "qqp", "qqp", ("question1", "question2"), 2, ("accuracy", "f1"), "combined_score",
            ("not_duplicate", "duplicate"), submission_files=(("test", "QQP.tsv"),),
            tsv_text_columns=("question1", "question2"), tsv_label_column="is_duplicate",
            description="QQP: duplicate questions",
        ),
        TaskSpec(
            "mnli", "mnli", ("premise", "hypothesis"), 3, _ACC, "accuracy",
            ("entailment", "neutral", "contradiction"),
            validation_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
            submission_files=(("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")),
            submit_label_names=True, tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="gold_label",
            description="MNLI: inference, matched/mismatched genres",
        ),
        TaskSpec(
            "qnli", "qnli", ("question", "sentence"), 2, _ACC, "accuracy", _NLI2,
            submission_files=(("test", "QNLI.tsv"),), submit_label_names=True,
            tsv_text_columns=("question", "sentence"),
            description="QNLI: question/answer entailment",
        ),
        TaskSpec(
            "rte", "rte", ("sentence1", "sentence2"), 2, _ACC, "accuracy", _NLI2,
            submission_files=(("test", "RTE.tsv"),), submit_label_names=True,
            tsv_text_columns=("sentence1", "sentence2"),
            description="RTE: textual entailment",
        ),
        TaskSpec(
            "wnli", "wnli", ("sentence1", "sentence2"), 2, _ACC, "accuracy",
            ("not_entailment", "entailment"), submission_files=(("test", "WNLI.tsv"),),
            tsv_text_columns=("sentence1", "sentence2"),
            description="WNLI: Winograd inference (labels flipped vs RTE)",
        ),
        TaskSpec(
            "sst2_rt", None, ("sentence",), 2, _ACC, "accuracy", ("negative", "positive"),
            test_splits=(),
            description="SST-2 stand-in (NOT SST-2): 10,568 embedded Rotten Tomatoes snippets "
            "(Hutto & Gilbert 2014), score > 0 = positive, seeded 90/10 split",
        ),
    )
}  # fmt: skip

PAPER_TASKS = ("mnli", "qnli", "qqp", "sst2")
GLUE9 = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
TASK_GROUPS = {"all": PAPER_TASKS, "paper": PAPER_TASKS, "glue9": GLUE9}

SST2_RT_SEED = 0  # fixed: the stand-in's split is part of its definition
SST2_RT_VALIDATION_FRACTION = 0.1


def get_task(name: str) -> TaskSpec:
    """The spec of one task; an unknown name lists the allowed ones."""
    if name not in TASKS:
        raise one_of("task", name, list(TASKS))
    return TASKS[name]


def resolve_tasks(name: str) -> list[TaskSpec]:
    """``all``/``paper`` (MNLI, QNLI, QQP, SST-2), ``glue9`` or one task name."""
    if name in TASK_GROUPS:
        return [TASKS[t] for t in TASK_GROUPS[name]]
    if name not in TASKS:
        raise one_of("task", name, [*TASKS, *TASK_GROUPS])
    return [TASKS[name]]


@dataclass
class GlueDataConfig:
    """Where a task's data comes from. Local files name one file per split; MNLI has matched and
    mismatched validation/test files."""

    source: str = "hub"  # hub | local | embedded (sst2_rt is always embedded unless local)
    train_file: str | None = None
    validation_file: str | None = None  # MNLI: validation_matched
    validation_mismatched_file: str | None = None  # MNLI only
    test_file: str | None = None  # MNLI: test_matched
    test_mismatched_file: str | None = None  # MNLI only
    text_columns: list[str] | None = None  # override; default: the hub names, then GLUE TSV's
    label_column: str = "label"  # falls back to the GLUE TSV name (gold_label, Quality, …)
    index_column: str | None = None  # default: idx/index/Index/id when present, else row number
    cache_dir: str | None = None  # datasets' Arrow cache for local files (default: HF's)

    def split_files(self, spec: TaskSpec) -> dict[str, str]:
        """Split name → file for a local task, checked against the task's splits."""
        vals, tests = spec.validation_splits, spec.test_splits
        # (config key, split it feeds or None when the task lacks it, required)
        slots = [
            ("train_file", "train", True),
            ("validation_file", vals[0], True),
            ("validation_mismatched_file", vals[1] if len(vals) > 1 else None, False),
            ("test_file", tests[0] if tests else None, False),
            ("test_mismatched_file", tests[1] if len(tests) > 1 else None, False),
        ]
        files: dict[str, str] = {}
        for key, split, required in slots:
            value = getattr(self, key)
            if value and split is None:
                raise ConfigError(f"task {spec.name} has no split for data.{key}={value!r}")
            if required and not value:
                raise ConfigError(
                    f"data.source=local for task {spec.name} needs data.{key}=PATH "
                    "(.tsv, .csv, .json or .jsonl)"
                )
            if value and split is not None:
                files[split] = value
        return files


# ------------------------------------------------------------------------------------------------
# Loading


def load_task(spec: TaskSpec, cfg: GlueDataConfig | None = None) -> dict:
    """``{split: datasets.Dataset}`` with the text columns, ``label`` and ``idx``."""
    cfg = cfg or GlueDataConfig()
    if cfg.source not in SOURCES:
        raise one_of("data.source", cfg.source, SOURCES)
    if cfg.source == "local":
        return {
            split: read_split_file(Path(path), spec, cfg, is_test=split in spec.test_splits)
            for split, path in cfg.split_files(spec).items()
        }
    if spec.hub_config is None:
        return load_sst2_rt()
    if cfg.source == "embedded":
        raise ConfigError(
            f"task {spec.name} has no embedded data; embedded tasks: "
            f"{', '.join(t.name for t in TASKS.values() if t.hub_config is None)}"
        )
    return load_hub(spec)


def _hub_error(spec: TaskSpec, exc: Exception) -> DataError:
    return DataError(
        f"cannot load GLUE task {spec.name} ({HUB_DATASET}, {spec.hub_config}) from the hub "
        f"({type(exc).__name__}); offline ({OFFLINE_FLAGS}=1) or without a network "
        f"{OFFLINE_WAY_OUT}"
    )


def load_hub(spec: TaskSpec) -> dict:
    """``nyu-mll/glue`` with the label cast to a plain int64/float32 column."""
    require_hub(f"GLUE task {spec.name} ({HUB_DATASET}, {spec.hub_config})", OFFLINE_WAY_OUT)
    import datasets

    try:
        raw = datasets.load_dataset(HUB_DATASET, spec.hub_config)
    except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise _hub_error(spec, exc) from exc
    out = {}
    for split in spec.splits:
        if split not in raw:
            raise DataError(f"{HUB_DATASET}/{spec.hub_config} has no split {split!r}")
        ds = raw[split].select_columns([*spec.text_columns, "label", "idx"])
        out[split] = ds.cast(_features(spec))
    return out


def _features(spec: TaskSpec, extra: dict | None = None):
    from datasets import Features, Value

    cols = {c: Value("string") for c in spec.text_columns}
    label = Value("float32") if spec.is_regression else Value("int64")
    return Features({**cols, "label": label, "idx": Value("int64"), **(extra or {})})


def read_table(path: Path, cache_dir: str | None = None, column_names: Sequence[str] = ()):
    """A .tsv (tab, QUOTE_NONE: GLUE's TSVs hold stray quotes), .csv or .json/.jsonl file, read
    with datasets' packaged builders; strings are kept verbatim (no NA guessing). ``column_names``
    names the columns of a file without a header row."""
    import datasets

    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    kwargs: dict
    if suffix == ".tsv":
        builder, kwargs = "csv", {"sep": "\t", "quoting": 3, "na_filter": False}
        if column_names:
            kwargs |= {"column_names": list(column_names), "header": None}
    elif suffix == ".csv":
        builder, kwargs = "csv", {"na_filter": False}
    elif suffix in (".json", ".jsonl"):
        builder, kwargs = "json", {}
    else:
        raise DataError(
            f"data file {str(path)!r} has an unsupported suffix; allowed: .tsv, .csv, .json, .jsonl"
        )
    try:
        return datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=cache_dir, **kwargs
        )
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = str(exc.__cause__ or exc).strip().splitlines()
        raise DataError(
            f"cannot read {path}: {cause[-1] if cause else type(exc).__name__}"
        ) from exc


def _pick_columns(spec: TaskSpec, cfg: GlueDataConfig, found: list[str], path: Path) -> list[str]:
    """The file's text columns: the override, else the hub names, else the GLUE TSV names."""
    if cfg.text_columns:
        if len(cfg.text_columns) != len(spec.text_columns):
            raise ConfigError(
                f"data.text_columns={list(cfg.text_columns)} has {len(cfg.text_columns)} names; "
                f"task {spec.name} needs {len(spec.text_columns)}"
            )
        candidates = [tuple(cfg.text_columns)]
    else:
        candidates = [c for c in (spec.text_columns, spec.tsv_text_columns) if c]
    for cols in candidates:
        if all(c in found for c in cols):
            return list(cols)
    wanted = list(candidates[0])
    raise DataError(
        f"{path}: missing text column(s) {wanted} for task {spec.name}; columns found: "
        f"{found}; set data.text_columns=[…]"
    )


def _label_value(value, spec: TaskSpec, path: Path):
    """A raw label (id, name, or score) as the task's int/float; −1 means unlabelled."""
    if spec.is_regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{path}: label {value!r} is not a number (task {spec.name})") from None
    if isinstance(value, str) and value in spec.label_names:
        return spec.label_names.index(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is not None and number.is_integer() and -1 <= number < spec.num_labels:
        return int(number)
    allowed = [*spec.label_names, *map(str, range(spec.num_labels))]
    raise DataError(
        f"{path}: label {value!r} is not valid for task {spec.name}; allowed: {', '.join(allowed)}"
    )


def _headerless_columns(path: Path, spec: TaskSpec) -> tuple[str, ...]:
    """The task's header-less TSV columns when ``path`` is such a file (CoLA's train/dev.tsv:
    4 fields, a 0/1 label second), else ()."""
    names = spec.tsv_headerless_columns
    if not names or path.suffix.lower() != ".tsv" or not path.is_file():
        return ()
    with path.open(encoding="utf-8") as f:
        fields = f.readline().rstrip("\n").split("\t")
    label = names.index(spec.tsv_label_column) if spec.tsv_label_column in names else None
    looks_like_data = label is not None and fields[label].strip() in {"0", "1"}
    return names if len(fields) == len(names) and looks_like_data else ()


def read_split_file(path: Path, spec: TaskSpec, cfg: GlueDataConfig, is_test: bool = False):
    """One local split in the loader's common shape."""
    from datasets import Dataset

    headerless = _headerless_columns(path, spec)
    table = read_table(path, cfg.cache_dir, headerless)
    found = table.column_names
    text_cols = _pick_columns(spec, cfg, found, path)
    label_col = next((c for c in (cfg.label_column, spec.tsv_label_column) if c in found), None)
    if label_col is None and not is_test:
        raise DataError(
            f"{path}: missing label column {cfg.label_column!r} for task {spec.name}; columns "
            f"found: {found}; set data.label_column=…"
        )
    n = len(table)
    if label_col is None:
        labels: list = [-1.0 if spec.is_regression else -1] * n
    else:
        labels = [_label_value(v, spec, path) for v in table[label_col]]
    if not is_test and any(lab == -1 for lab in labels):
        raise DataError(f"{path}: labels of −1 (unlabelled) in a split used for training/scoring")
    index_col = cfg.index_column or next((c for c in INDEX_COLUMNS if c in found), None)
    if index_col is not None and index_col not in found:
        raise DataError(f"{path}: no index column {index_col!r}; columns found: {found}")
    indices = list(range(n)) if index_col is None else [int(i) for i in table[index_col]]
    columns = {
        canon: ["" if t is None else str(t) for t in table[col]]
        for canon, col in zip(spec.text_columns, text_cols)
    }
    return Dataset.from_dict({**columns, "label": labels, "idx": indices}, features=_features(spec))


def load_sst2_rt() -> dict:
    """The embedded SST-2 stand-in: Rotten Tomatoes snippets with score ≠ 0, label = score > 0,
    a fixed seeded 90/10 split (9,511 / 1,057). ``score`` (−4…4) is kept as a regression target."""
    from datasets import Dataset, Value

    raw = read_asset(MOVIE_REVIEWS_ASSET).decode("utf-8").replace("\r\n", "\n")
    ids, scores, texts = [], [], []
    for line in raw.split("\n"):
        if not line:
            continue
        idx, score, text = line.split("\t", 2)
        if float(score) == 0.0:
            continue
        ids.append(int(idx))
        scores.append(float(score))
        texts.append(text)
    n = len(texts)
    n_val = round(n * SST2_RT_VALIDATION_FRACTION)
    perm = np.random.default_rng(SST2_RT_SEED).permutation(n)
    parts = {"train": np.sort(perm[n_val:]), "validation": np.sort(perm[:n_val])}
    features = _features(TASKS["sst2_rt"], {"score": Value("float64")})
    return {
        split: Dataset.from_dict(
            {
                "sentence": [texts[i] for i in rows],
                "label": [int(scores[i] > 0) for i in rows],
                "idx": [ids[i] for i in rows],
                "score": [scores[i] for i in rows],
            },
            features=features,
        )
        for split, rows in parts.items()
    }


# ------------------------------------------------------------------------------------------------
# Metrics and submissions


def to_predictions(spec: TaskSpec, predictions) -> np.ndarray:
    """Class ids from logits (N, C) or ids (N,); floats (N,) or (N, 1) for regression."""
    if isinstance(predictions, torch.Tensor):
        predictions = predictions.detach().float().cpu().numpy()
    p = np.asarray(predictions)
    if spec.is_regression:
        return p.reshape(-1).astype(np.float64)
    if p.ndim == 2:
        return p.argmax(axis=-1)
    return p.astype(np.int64).reshape(-1)


def compute_metrics(spec: TaskSpec, predictions, labels) -> dict[str, float]:
    """The task's GLUE metrics (scikit-learn / scipy; ``evaluate`` needs the hub), plus
    ``combined_score`` (their mean) where GLUE reports two numbers."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    preds = to_predictions(spec, predictions)
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    y = y.reshape(-1)
    if len(y) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(y)} labels")
    if len(y) and np.all(y == -1):
        raise DataError(f"task {spec.name}: labels are all −1 (a test split cannot be scored)")
    fns = {
        "accuracy": lambda: accuracy_score(y, preds),
        "f1": lambda: f1_score(y, preds),
        "matthews_correlation": lambda: matthews_corrcoef(y, preds),
        "pearson": lambda: pearsonr(preds, y)[0],
        "spearmanr": lambda: spearmanr(preds, y)[0],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant inputs: scipy warns and returns nan
        out = {name: float(fns[name]()) for name in spec.metrics}
    if len(spec.metrics) > 1:
        out["combined_score"] = float(np.mean([out[m] for m in spec.metrics]))
    return out


def write_submission(
    spec: TaskSpec, split_name: str, predictions, indices: Sequence[int], out_dir: str | Path
) -> Path:
    """GLUE's submission TSV (``index``, ``prediction``), rows in index order: label names for
    MNLI/QNLI/RTE, ids for the others, STS-B scores clipped to 0–5."""
    path = Path(out_dir) / spec.submission_file(split_name)
    preds = to_predictions(spec, predictions)
    idx = np.asarray(indices).reshape(-1)
    if len(idx) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(idx)} indices")
    if spec.is_regression:
        values = [f"{v:.3f}" for v in np.clip(preds, 0.0, 5.0)]
    elif spec.submit_label_names:
        values = [spec.label_names[int(p)] for p in preds]
    else:
        values = [str(int(p)) for p in preds]
    order = np.argsort(idx, kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction", *(f"{int(idx[i])}\t{values[i]}" for i in order)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# Encoding


def encode_task(split, spec: TaskSpec, tokenizer, max_length: int = 128) -> EncodedSplit:
    """Tokenise one split (pairs as ``<s> A </s></s> B </s>``, longest-first truncation)."""
    first = list(split[spec.text_columns[0]])
    second = list(split[spec.text_columns[1]]) if spec.is_pair else None
    ids: list[list[int]] = []
    step = 10_000
    for start in range(0, len(first), step):
        pairs = second[start : start + step] if second is not None else None
        ids += tokenizer.encode_batch(first[start : start + step], pairs, max_length=max_length)
    return EncodedSplit(ids, list(split["label"]), [int(i) for i in split["idx"]])
