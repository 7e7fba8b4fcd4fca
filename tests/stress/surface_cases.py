"""The bad inputs of issue 21's surfaces, for tests/stress/bad_inputs.py: mechanisms from outside
llnbench, hf: folders, output and cache paths, damaged caches and results, run-directory reuse.

Each case is a :class:`Case`: the job, the input as shown, the arguments, what is intended
(``error``: exit 2 and one line; ``runs``: exit 0; ``error-or-rebuild``: one line and exit 2, or
exit 0 with a line about the cache), its class, and optionally a ``prepare`` that builds the
damaged copy it runs on (so no case spoils a fixture another case uses).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from helpers import tiny_pretrain_args
from outside_mechanisms import BROKEN, write_outside_mechanisms
from typer.testing import CliRunner

from llnbench.cli import app

GLUE_BASE = ["task=sst2_rt", "attention=softmax", "model=tiny", "model.layers=1",
             "model.hidden=32", "model.heads=1", "model.ffn=64", "model.max_len=32",
             "max_length=32", "max_train_samples=16", "max_eval_samples=16",
             "trainer.max_steps=2", "trainer.batch_size=4", "submission=false",
             "wandb.mode=disabled"]  # fmt: skip
GLUE_HF = ["task=sst2_rt", "max_length=32", "max_train_samples=16", "max_eval_samples=16",
           "trainer.max_steps=2", "trainer.batch_size=4", "submission=false",
           "wandb.mode=disabled"]  # fmt: skip
SCALE_BASE = ["--min-len", "8", "--max-len", "8", "--attention", "softmax", "--mode", "fwd",
              "--device", "cpu", "warmup=0", "min_time_s=0", "max_repeats=1",
              "wandb.mode=disabled"]  # fmt: skip
LRA_BASE = ["task=listops", "attention=softmax", "data.max_length=32", "data.min_length=6",
            "data.train_size=48", "data.validation_size=16", "data.test_size=16",
            "data.workers=1", "model.layers=1", "trainer.batch_size=8", "trainer.max_steps=4",
            "trainer.log_every=2", "trainer.eval_every=2", "wandb.mode=disabled"]  # fmt: skip
ANALYZE_BASE = ["s2=[1.0]", "seq_len=16", "draws=1", "attentions=[softmax]",
                "wandb.mode=disabled"]  # fmt: skip

# The helper whose branch makes a class pass (issue 21); the other classes are H7's own.
OWNERS = {"run-dir reuse": "H6", "hf: folder": "H6", "damaged LRA cache": "H5",
          "damaged result": "H5", "damaged corpus cache": "H8",
          "markup in lra's lines": "jobs/lra.py (H5)"}  # fmt: skip


@dataclass
class Case:
    job: str
    value: str
    args: list[str]
    expect: str = "error"
    kind: str = ""
    prepare: Callable[[], None] | None = None

    @property
    def owner(self) -> str:
        return OWNERS.get(self.kind, "H7")


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def surface_fixtures(tmp: Path, run: Path) -> dict[str, Path]:
    """Broken mechanisms on sys.path; an exported hf: folder (1 and 2 layers); finished glue and
    lra runs; the LRA data cache they made."""
    site = write_outside_mechanisms(tmp / "site")
    sys.path.insert(0, str(site))
    run2 = tmp / "pretrained2"
    invoke("pretrain", *tiny_pretrain_args(tmp, run2, "model.layers=2"))
    invoke("export", str(run), "--format", "hf", str(tmp / "hf"))
    invoke("export", str(run2), "--format", "hf", str(tmp / "hf2"))
    invoke("glue", *GLUE_BASE, f"run_dir={tmp / 'gluerun'}")
    invoke("lra", *LRA_BASE, f"data.cache_dir={tmp / 'lracache'}", f"run_dir={tmp / 'lrarun'}")
    corpus = shutil.copytree(tmp / "cache", tmp / "corpus-pristine")  # before other cases add
    return {"HF": tmp / "hf", "HF2": tmp / "hf2", "GLUE": tmp / "gluerun",
            "LRA": tmp / "lrarun", "LRACACHE": tmp / "lracache", "CORPUS": corpus}  # fmt: skip


# --- damage ----------------------------------------------------------------------------------


def copy(src: Path, dst: Path) -> Path:
    if not dst.exists():
        shutil.copytree(src, dst, symlinks=True)
    return dst


def rewrite_npz(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def damage_npz(how: str) -> Callable[[Path], None]:
    """A damage to every cache file under a folder."""

    def apply(folder: Path) -> None:
        for path in sorted(folder.rglob("*.npz")):
            damage_one(path, how)

    return apply


def damage_one(path: Path, how: str) -> None:
    if how == "garbled":
        path.write_bytes(path.read_bytes()[:100])
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how.startswith("drop:"):
        rewrite_npz(path, lambda a: a.pop(how.removeprefix("drop:")))
    elif how.startswith("short:"):
        key = how.removeprefix("short:")
        rewrite_npz(path, lambda a: a.update({key: a[key][:-3]}))
    elif how.startswith("shift:"):  # values changed in range: only a checksum sees it
        key = how.removeprefix("shift:")
        rewrite_npz(path, lambda a: a.update({key: (a[key] + 1) % max(2, int(a[key].max()))}))
    elif how.startswith("past-end:"):
        key = how.removeprefix("past-end:")
        rewrite_npz(path, lambda a: a[key].__setitem__(-1, a[key][-1] + 1000))
    else:
        raise ValueError(how)


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    data = change(data) or data
    path.write_text(json.dumps(data))


def damage_hf(how: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        config = folder / "config.json"
        if how == "config-list":
            config.write_text(json.dumps([json.loads(config.read_text())]))
        elif how == "config-not-json":
            config.write_text("{not json")
        elif how == "hidden-string":
            edit_json(config, lambda c: c.update(hidden_size=str(c["hidden_size"])))
        elif how == "hidden-disagrees":
            edit_json(config, lambda c: c.update(hidden_size=2 * c["hidden_size"]))
        elif how == "pad-null":
            edit_json(config, lambda c: c.update(pad_token_id=None))
        elif how == "fewer-layers":
            edit_json(config, lambda c: c.update(num_hidden_layers=c["num_hidden_layers"] - 1))
        elif how == "index-not-json":
            (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
            (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
        elif how == "weight-shape":
            from safetensors.torch import load_file, save_file

            state = load_file(str(folder / "model.safetensors"))
            name = next(k for k in sorted(state) if k.endswith("attention.self.query.weight"))
            state[name] = state[name][:, :-1].contiguous()
            save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        else:
            raise ValueError(how)

    return apply


def garble(relative: str, data: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / relative).write_bytes(data)

    return apply


def prepared(src: Path, dst: Path, damage: Callable[[Path], None]) -> Callable[[], None]:
    return lambda: damage(copy(src, dst))


# --- cases -----------------------------------------------------------------------------------


def surface_cases(f: dict[str, str], g: dict[str, Path]) -> list[Case]:
    tmp = Path(f["TMP"])
    out: list[Case] = []

    def pretrain(value: str, *extra: str, expect="error", kind="", prepare=None) -> None:
        run_dir = f"{tmp}/sp{len(out)}"
        args = tiny_pretrain_args(tmp, run_dir, *extra, *value.split(" "))
        out.append(Case("pretrain", value, args, expect, kind, prepare))

    def job(name: str, base: list[str], value: str, *extra: str, expect="error", kind="",
            prepare=None) -> None:  # fmt: skip
        where = ["--out", f"{tmp}/ss{len(out)}"] if name == "scale" else [
            f"run_dir={tmp}/s{name[0]}{len(out)}"]  # fmt: skip
        args = [*base, *where, *extra, *value.split(" ")]
        out.append(Case(name, value, args, expect, kind, prepare))

    # outside mechanisms: every broken class, in every job that builds one
    k = "outside mechanism"
    for cls in BROKEN:
        pretrain(f"attention=broken_attn:{cls}", kind=k)
    for value in ["attention=broken_attn:IgnoresCausal model.causal=true",
                  "attention=ep_syntax model.causal=true", "attention=ep_raises_on_import",
                  "attention=ep_missing", "attention=ep_shape",
                  "attention=broken_syntax_attn:Anything", "attention=broken_import_attn:Anything",
                  "attention=broken_attn:Nope"]:  # fmt: skip
        pretrain(value, kind=k)
    pretrain("attention=broken_attn:Good", expect="runs", kind=k)
    pretrain("attention=ep_good model.causal=true", expect="runs", kind=k)
    for cls in ["InitRaises", "WrongShape", "Float64", "NoneOut", "ep_shape", "ep_syntax"]:
        spec = cls if cls.startswith("ep_") else f"broken_attn:{cls}"
        job("glue", GLUE_BASE, f"attention={spec}", kind=k)
    for cls in ["TupleOut", "ForwardRaises", "NaNOut", "ep_shape", "ep_syntax"]:
        spec = cls if cls.startswith("ep_") else f"broken_attn:{cls}"
        job("lra", LRA_BASE, f"attention={spec}", f"data.cache_dir={tmp}/lracache", kind=k)
    for value in ["--attention broken_attn:WrongShape", "--attention broken_attn:IntOut",
                  "--attention ep_shape", "--attention ep_syntax", "--attention ep_missing",
                  "--attention softmax,broken_attn:NaNOut",
                  "--causal --attention broken_attn:IgnoresCausal"]:  # fmt: skip
        job("scale", SCALE_BASE, value, kind=k)
    job("scale", SCALE_BASE, "--attention all", expect="runs", kind=k)  # broken ones: rows
    for value in [
        "attentions=[broken_attn:Float64]",
        "attentions=[broken_attn:InitRaises]",
        "attentions=[ep_raises_on_import]",
        "attentions=[softmax,ep_shape]",
    ]:
        job("analyze", ANALYZE_BASE, value, kind=k)

    # output paths, run directories, lock files, cache folders
    k = "output path"
    run = f["RUN"]
    for target, expect in [(f"{f['FILE']}/out", "error"), ("/proc/llnbench-out", "error"),
                           ("/sys/llnbench-out", "error"), (f["FILE"], "error"),
                           ("/dev/full", "error"), (f"{tmp}/o[x]", "runs"),
                           (f"{tmp}/o[/x]", "runs"), (f"{tmp}/[bold]o", "runs")]:  # fmt: skip
        out.append(Case("export", f"OUT={target}", [run, "--format", "hf", target], expect, k))
    pretrain("run_dir=/sys/llnbench-run", kind=k)
    job("scale", SCALE_BASE, "--out /proc/llnbench-scale", kind=k)
    job("glue", GLUE_BASE, f"run_dir={f['FILE']}/sub", kind=k)
    job("lra", LRA_BASE, "run_dir=/proc/llnbench-lra", kind=k)
    job("analyze", ANALYZE_BASE, "run_dir=/sys/llnbench-analyze", kind=k)
    out.append(
        Case("report", "run_dir=/proc/llnbench-report", [run, "run_dir=/proc/x"], "error", k)
    )
    folder = f"{tmp}/l[x]"  # a legal name: printed as typed by every line that shows it
    out.append(Case("lra", f"run_dir={folder}", [*LRA_BASE, f"data.cache_dir={tmp}/lracache",
                    f"run_dir='{folder}'"], "runs", "markup in lra's lines"))  # fmt: skip
    k = "lock file"
    locks = {"fifo": tmp / "lock_fifo", "dev-full": tmp / "lock_full", "dir": tmp / "lock_dir",
             "dangling": tmp / "lock_dangling"}  # fmt: skip
    for folder in locks.values():
        folder.mkdir()
    os.mkfifo(locks["fifo"] / ".llnbench.lock")
    os.symlink("/dev/full", locks["dev-full"] / ".llnbench.lock")
    (locks["dir"] / ".llnbench.lock").mkdir()
    os.symlink(tmp / "nowhere", locks["dangling"] / ".llnbench.lock")
    pretrain(f"run_dir={locks['fifo']}", kind=k)
    job("scale", SCALE_BASE, f"--out {locks['dev-full']}", kind=k)
    job("glue", GLUE_BASE, f"run_dir={locks['dir']}", kind=k)
    job("analyze", ANALYZE_BASE, f"run_dir={locks['dangling']}", kind=k)
    k = "cache path"
    for value in [f"data.cache_dir={f['FILE']}/sub", "data.cache_dir=/proc/llnbench-cache",
                  "data.cache_dir=/sys/llnbench-cache"]:  # fmt: skip
        job("lra", LRA_BASE, value, kind=k)
    pretrain("data.cache_dir=/proc/llnbench-cache", kind=k)

    # hf: folders whose config or weights disagree with the model they build
    k = "hf: folder"
    for how in ["config-list", "config-not-json", "hidden-string", "hidden-disagrees", "pad-null",
                "index-not-json", "weight-shape"]:  # fmt: skip
        folder = tmp / f"hf-{how}"
        job("glue", GLUE_HF, f"pretrained=hf:{folder}", kind=k,
            prepare=prepared(g["HF"], folder, damage_hf(how)))  # fmt: skip
        out[-1].value = f"hf: {how}"
    folder = tmp / "hf-fewer-layers"
    job("glue", GLUE_HF, f"pretrained=hf:{folder}", kind=k,
        prepare=prepared(g["HF2"], folder, damage_hf("fewer-layers")))  # fmt: skip
    out[-1].value = "hf: fewer-layers (config.json 1, weights 2)"
    # model=small with the tiny run's shape overrides would equal the folder: change one field
    pretrain(f"pretrained=hf:{g['HF']} model=small model.hidden=128", kind=k)
    job("glue", GLUE_HF, f"pretrained=hf:{g['HF']} model.hidden=32", kind=k)

    # damaged caches: refused in one line, or rebuilt with a line saying so
    k = "damaged LRA cache"
    for how in ["shift:train_labels", "past-end:train_offsets", "drop:validation_labels",
                "short:train_labels", "directory", "garbled"]:  # fmt: skip
        cache = tmp / f"lracache-{how.replace(':', '-')}"
        job("lra", LRA_BASE, f"data.cache_dir={cache}", expect="error-or-rebuild", kind=k,
            prepare=prepared(g["LRACACHE"], cache, damage_npz(how)))  # fmt: skip
        out[-1].value = f"LRA cache: {how}"
    k = "damaged corpus cache"
    for how in ["garbled", "directory", "drop:train", "shift:train"]:
        cache = tmp / f"corpus-{how.replace(':', '-')}"
        pretrain(f"data.cache_dir={cache}", expect="error-or-rebuild", kind=k,
                 prepare=prepared(g["CORPUS"], cache, damage_npz(how)))  # fmt: skip
        out[-1].value = f"corpus cache: {how}"
    k = "damaged result"
    for name, src, relative, data in [
        ("lra", "LRA", "seed0/result.json", b'{"accuracy": 0.'),
        ("lra", "LRA", "seed0/result.json", bytes(range(256))),
        ("glue", "GLUE", "results.json", b"{"),
        ("glue", "GLUE", "sst2_rt/seed0/result.json", b"\xff\xfe garbage"),
    ]:
        folder = tmp / f"result-{len(out)}"
        base = [*LRA_BASE, f"data.cache_dir={g['LRACACHE']}"] if name == "lra" else GLUE_BASE
        # a garbled per-seed result is refused (it holds a seed's score); the run's results.json
        # is rebuilt from them, with a warning line
        expect = "error-or-rebuild" if relative == "results.json" else "error"
        out.append(Case(name, f"rerun over a garbled {relative}", [*base, f"run_dir={folder}"],
                        expect, k, prepared(g[src], folder, garble(relative, data))))  # fmt: skip

    # run directories that hold another job's run, or a run of other settings
    k = "run-dir reuse"
    runs = {"pretrain": Path(run), "glue": g["GLUE"], "lra": g["LRA"]}
    for name, over in [("lra", "pretrain"), ("glue", "lra"), ("pretrain", "glue"),
                       ("scale", "pretrain"), ("analyze", "pretrain"), ("glue", "pretrain"),
                       ("lra", "glue")]:  # fmt: skip
        folder = tmp / f"reuse-{len(out)}"
        base = {"lra": [*LRA_BASE, f"data.cache_dir={g['LRACACHE']}"], "glue": GLUE_BASE,
                "scale": SCALE_BASE, "analyze": ANALYZE_BASE}.get(name)  # fmt: skip
        prepare = prepared(runs[over], folder, lambda _: None)
        if name == "pretrain":
            out.append(Case(name, f"run_dir=<a {over} run>", tiny_pretrain_args(tmp, folder),
                            "error", k, prepare))  # fmt: skip
        else:
            where = ["--out", str(folder)] if name == "scale" else [f"run_dir={folder}"]
            out.append(Case(name, f"run_dir=<a {over} run>", [*base, *where], "error", k, prepare))
    for value, expect in [("seed=1", "error"), ("trainer.lr=0.5", "error"),
                          ("trainer.max_steps=3", "error"), ("mlm_probability=0.3", "error"),
                          ("trainer.log_every=1", "runs")]:  # fmt: skip
        folder = tmp / f"resume-{len(out)}"
        out.append(Case("pretrain", f"resume a finished run with {value}",
                        tiny_pretrain_args(tmp, folder, value), expect, k,
                        prepared(Path(run), folder, lambda _: None)))  # fmt: skip
    return out
