"""A battery of bad inputs, run as a user types them; prints a Markdown table of what each prints.

    python tests/stress/bad_inputs.py > bad-inputs.md        # ~300 cases, several minutes on CPU
    python tests/stress/bad_inputs.py --surfaces             # only the ~100 of issue 21

Every case runs in-process through the CLI (Typer's CliRunner; the console script adds only the
one-line form of Typer's own usage errors, which tests/test_hardening.py checks in a subprocess).
A case passes when it exits 2 with one line naming the problem and no traceback; the base
arguments make an accepted value train for a second or two, so a value that should have been
refused shows up as exit 0 ("accepted"). The last column flags any other outcome.

The surfaces of issue 21 (``surface_cases``) name the class of each input and what is intended:
``error`` (exit 2, one line), ``runs`` (a legal value: exit 0), or ``error-or-rebuild`` (a damaged
cache or results.json: refused in one line, or rebuilt with exit 0 and a line saying so). Their fixtures: broken
mechanisms from outside llnbench (tests/outside_mechanisms.py), an exported hf: folder, an LRA
data cache, finished pretrain, glue and lra runs; a case that would change a fixture gets its own
copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py

from helpers import tiny_pretrain_args
from surface_cases import GLUE_BASE, SCALE_BASE, Case, surface_cases, surface_fixtures
from typer.testing import CliRunner

from llnbench.cli import app

# Legal values with rich-markup characters: they must run and print the path as typed.
VALID = {"run_dir='$TMP/[x]'", "--out $TMP/s[x]", "run_dir='$TMP/g[x]'"}


def fixtures(tmp: Path) -> dict[str, str]:
    """Files and runs the cases point at."""
    (tmp / "a_file").write_text("not a folder\n")
    (tmp / "empty.txt").write_text("")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp / "no_text").mkdir()
    (tmp / "locked").mkdir()
    pretrained = tmp / "pretrained"
    result = CliRunner().invoke(app, ["pretrain", *tiny_pretrain_args(tmp, pretrained)])
    assert result.exit_code == 0, result.output
    (tmp / "not_a_checkpoint.pt").write_bytes(b"junk")
    return {
        "FILE": str(tmp / "a_file"),
        "EMPTY": str(tmp / "empty.txt"),
        "BINARY": str(tmp / "binary.txt"),
        "NOTEXT": str(tmp / "no_text"),
        "RUN": str(pretrained),
        "JUNK": str(tmp / "not_a_checkpoint.pt"),
        "TMP": str(tmp),
    }


def cases(f: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(job, arguments as typed after the job name)."""
    tmp = f["TMP"]
    pretrain = [
        "trainer.lr=nan", "trainer.lr=inf", "trainer.lr=-inf", "trainer.lr=-1", "trainer.lr=0",
        "trainer.lr=abc", "trainer.lr=[1,2]", "trainer.lr=true", "trainer.max_steps=0",
        "trainer.max_steps=-5", "trainer.max_steps=1.5", "trainer.max_steps=abc",
        "trainer.max_steps=1e20", "trainer.batch_size=0", "trainer.batch_size=100000",
        "trainer.grad_accum=0", "trainer.weight_decay=-1", "trainer.weight_decay=nan",
        "trainer.betas=[0.9]", "trainer.betas=[0.9,1.5]", "trainer.betas=[nan,0.9]",
        "trainer.betas=abc", "trainer.adam_eps=0", "trainer.adam_eps=-1",
        "trainer.warmup_ratio=1", "trainer.warmup_ratio=-0.1", "trainer.clip_norm=-1",
        "trainer.clip_norm=inf", "trainer.precision=fp8", "trainer.device=tpu",
        "trainer.device=cuda", "trainer.device=cuda:9", "trainer.log_every=0",
        "trainer.eval_every=0", "trainer.checkpoint_every=0", "trainer.eval_batch_size=0",
        "trainer.resume=maybe", "trainer.resume=true", "trainer.epochs=-1", "trainer.bogus=1",
        "model=huge", "model.layers=0", "model.hidden=0", "model.heads=0", "model.heads=3",
        "model.dropout=1.5", "model.dropout=nan", "model.max_len=0", "model.vocab_size=10",
        "model.layer_norm_eps=0", "model.layer_norm_eps=nan", "model.causal=maybe",
        "model.ffn=-1", "attention=nope", "attention.bogus=1", "attention=lln attention.eps=abc",
        "attention=lln attention.eps=nan", "attention=lln_diag attention.diag_block=abc",
        "data=nope", "data.source=nope", "data.train_file=/nonexistent/x.txt",
        f"data.train_file={f['EMPTY']}", f"data.train_file={f['BINARY']}",
        f"data.train_file={f['NOTEXT']}", "data.validation_fraction=0",
        "data.max_documents=0", "data.sample_by=word", f"data.cache_dir={f['FILE']}",
        "block_size=4", "block_size=1000", "mlm_probability=0", "mlm_probability=1",
        "mlm_probability=nan", "eval_blocks=0", "eval_blocks=-1", "analysis_every=-1",
        "seed=abc", "seed=-1", "seed=99999999999999999999", f"run_dir={f['FILE']}",
        "run_dir=/proc/llnbench-run", f"run_dir={tmp}/[x]", f"run_dir={tmp}/[/x]",
        f"run_dir='{tmp}/[x]'",
        f"run_dir={f['FILE']}/sub", "wandb.mode=sometimes", "experiment=nope", "bogus=1",
        "trainer.lr==1", "trainer.lr", "=1", "attention=lln,softmax", "+trainer.lr=1",
        "--bogus", "model.name=[bold]x",
    ]  # fmt: skip
    glue = [
        "task=nope", "task=sst2", "pretrained=/nonexistent", f"pretrained={f['JUNK']}",
        f"pretrained={f['NOTEXT']}", "attention=null", "max_length=4", "max_length=1000",
        "trainer.seeds=[]", "trainer.seeds=[1,1]", "trainer.seeds=abc", "trainer.lr=nan",
        "trainer.lr=inf", "trainer.epochs=0", "trainer.epochs=nan", "max_train_samples=0",
        "data.source=nope", "data.source=local", "data.train_file=/nonexistent.tsv",
        "task.lr=abc", "task=all data.train_file=x.tsv", "submission=maybe", "tokenizer=nope/nope",
        f"run_dir={f['FILE']}", f"run_dir='{tmp}/g[x]'", f"pretrained='{tmp}/[x]'",
    ]  # fmt: skip
    scale = [
        "--max-len abc", "--max-len 0", "--min-len 0", "--min-len -1", "--attention nope",
        "--attention ,", "--mode sideways", "--device tpu", "--device cuda", "--dtype fp8",
        "--batch-size 0", "--heads 0", "--head-dim 0", "--scope galaxy", "--sdpa-backend warp",
        "--budget-s nan", "--budget-s -1", f"--out {f['FILE']}", f"--out {tmp}/s[x]",
        "warmup=-1", "min_time_s=-1", "max_repeats=0", "memory_fraction=0",
        "memory_fraction=2", "options.lln.eps=abc", "+options.nope.x=1",
        "+options.softmax.bogus=1", "--causal --attention lara", "--bogus", "seed=abc",
    ]  # fmt: skip
    analyze_base = ["s2=[1.0]", "seq_len=16", "draws=1", "attentions=[softmax]",
                    "wandb.mode=disabled"]  # fmt: skip
    analyze = [
        "mode=sideways", "attentions=[nope]", "attentions=[]", "s2=[-1]", "s2=[nan]", "s2=[]",
        "seq_len=1", "seq_len=100000", "head_dim=0", "heads=0", "draws=0", "device=tpu",
        "options.lln.eps=abc", "+options.lln.eps=abc", "+options.nope.x=1",
        "+options.softmax.bogus=1", "mode=checkpoint", "mode=checkpoint checkpoint=[runA,runB]",
        f"mode=checkpoint checkpoint={tmp}/[x]", f"mode=checkpoint checkpoint={f['RUN']} "
        "text_file=/nonexistent.txt", f"mode=checkpoint checkpoint={f['RUN']} max_len=1",
        f"mode=checkpoint checkpoint={f['RUN']} num_sequences=0", f"checkpoint={f['RUN']}",
        f"run_dir={f['FILE']}",
    ]  # fmt: skip
    report = [
        "/nonexistent", f"{f['NOTEXT']}", f"{f['FILE']}", f"{f['RUN']} run_dir={f['FILE']}",
        f"{f['RUN']} title=[x]", f"{tmp}/[y]",
    ]  # fmt: skip
    out = []
    for value in pretrain:
        args = tiny_pretrain_args(Path(tmp), f"{tmp}/p{len(out)}", *value.split(" "))
        out.append(("pretrain", value, args))
    for value in glue:
        out.append(("glue", value, [*GLUE_BASE, f"run_dir={tmp}/g{len(out)}", *value.split(" ")]))
    for value in scale:
        out.append(("scale", value, [*SCALE_BASE, "--out", f"{tmp}/s{len(out)}",
                                     *value.split(" ")]))  # fmt: skip
    for value in analyze:
        out.append(("analyze", value, [*analyze_base, f"run_dir={tmp}/a{len(out)}",
                                       *value.split(" ")]))  # fmt: skip
    for value in report:
        out.append(("report", value, [*value.split(" ")]))
    return out


def run_case(job: str, args: list[str]) -> tuple[int, str, bool]:
    result = CliRunner().invoke(app, [job, *args])
    text = result.output.strip()
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if crashed:
        text = "".join(traceback.format_exception_only(result.exception)).strip()
    if "Usage:" in text:  # Typer's own usage error: what the console script prints instead
        proc = subprocess.run([sys.executable, "-m", "llnbench", job, *args],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        return proc.returncode, (proc.stdout + proc.stderr).strip(), "Traceback" in proc.stderr
    return result.exit_code, text, crashed


def judge(case: Case, code: int, text: str, crashed: bool) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("llnbench:")]
    if crashed:
        return "TRACEBACK"
    if case.expect == "runs":
        typed = case.value.rsplit("/", 1)[-1].strip("'") if "[" in case.value else ""
        shown = typed in "".join(text.splitlines())
        return "ok (runs)" if code == 0 and shown else f"check ({code})"
    if code == 2 and len(errors) == 1 and "Traceback" not in text:
        return "ok"
    if case.expect == "error-or-rebuild" and code == 0:
        said = [
            ln
            for ln in lines
            if ("cache" in ln.lower() or "results.json" in ln.lower())  # what was damaged
            and any(
                w in ln.lower() for w in ("rebuil", "regenerat", "damaged", "invalid", "warning")
            )
        ]
        return "ok (rebuilt)" if len(said) == 1 else "accepted"
    return "accepted" if code == 0 else f"check ({len(lines)} lines)"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        found = fixtures(tmp)
        surface = surface_fixtures(tmp, Path(found["RUN"]))
        every = [Case(job, value, args, "runs" if value.replace(folder, "$TMP") in VALID
                      else "error") for job, value, args in cases(found)]  # fmt: skip
        if "--surfaces" in sys.argv:  # only the cases of issue 21
            every = []
        every += surface_cases(found, surface)
        rows = []
        for case in every:
            if case.prepare is not None:
                case.prepare()
            code, text, crashed = run_case(case.job, case.args)
            lines = [ln for ln in text.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("llnbench:")]
            shown = (errors or lines or [""])[-1].replace(folder, "$TMP")
            verdict = judge(case, code, text, crashed)
            value = case.value.replace(folder, "$TMP")
            rows.append((case, value, shown, code, verdict))
            print(f"{verdict:>12} {case.job} {value}", file=sys.stderr)
    print("| job | class | input | prints (last line) | exit | verdict |")
    print("|---|---|---|---|---|---|")
    for case, value, shown, code, verdict in rows:
        cells = [case.job, case.kind or "-", f"`{value}`", shown.replace("|", "\\|"), str(code),
                 verdict]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if not r[4].startswith("ok")]
    new = [r for r in rows if r[0].kind]
    print(f"\n{len(rows)} inputs ({len(new)} on the surfaces of issue 21); "
          f"{len(rows) - len(bad)} as intended (one line, exit 2; a legal value that runs; a "
          f"damaged cache refused or rebuilt); {len(bad)} other.")  # fmt: skip
    for case, value, _, _, verdict in bad:
        print(f"- {verdict}: {case.job} `{value}` ({case.kind or 'issue 15'}; {case.owner})")


if __name__ == "__main__":
    main()
