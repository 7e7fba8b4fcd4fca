"""``llnbench report``: one Markdown report from run directories, beside the published numbers.

    llnbench report runs/                    # every run below runs/
    llnbench report runs/scale/a runs/glue/b run_dir=reports/today

Reads only: scale.json, results.json, metrics.jsonl and the runs' PNGs. Writes report.md, a CSV
per section and the figures into its own run directory. Missing pieces are named, never invented.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from llnbench import files
from llnbench.console import console
from llnbench.errors import ConfigError
from llnbench.reporting.discover import find_runs
from llnbench.reporting.lra import lra_section
from llnbench.reporting.sections import (
    analyze_section,
    glue_section,
    pretrain_section,
    scale_section,
)
from llnbench.runs import open_run_dir, save_config


@dataclass
class ReportConfig:
    inputs: list[str] = field(default_factory=lambda: ["runs"])
    title: str = "llnbench report"
    run_dir: str | None = None

    def validate(self) -> None:
        if not self.inputs:
            raise ConfigError("report needs at least one input directory (e.g. `runs/`)")


def run(cfg: ReportConfig) -> Path:
    problems: list[str] = []  # unreadable files, named in the report instead of stopping it
    left_out: list[Path] = []  # runs/gpu-check/ below an input: the GPU check's own tiny runs
    run_dir = open_run_dir("report", "report", cfg.run_dir)  # not another job's run
    found = find_runs(cfg.inputs, exclude=Path(cfg.run_dir) if cfg.run_dir else None,
                      problems=problems, left_out=left_out)  # fmt: skip
    for folder in left_out:
        console.print(
            f"report: left out {folder} (the GPU check's own runs; name it to include them)",
            markup=False, highlight=False,
        )  # fmt: skip
    counts = {job: len(runs) for job, runs in found.items()}
    if not any(counts.values()):
        unreadable = f" ({len(problems)} unreadable: {problems[0]})" if problems else ""
        raise ConfigError(
            f"no llnbench run directories found under {', '.join(cfg.inputs)}{unreadable}"
        )
    save_config(run_dir, cfg)
    sections = [
        scale_section(found["scale"], run_dir),
        pretrain_section(found["pretrain"], run_dir),
        glue_section(found["glue"], found["pretrain"]),
        analyze_section(found["analyze"], run_dir),
        lra_section(found["lra"], run_dir),
    ]
    run_notes = [note for runs in found.values() for run in runs for note in run.notes]
    missing = problems + run_notes + [note for _, _, notes in sections for note in notes]
    for name, (_, rows, _) in zip(("scale", "pretrain", "glue", "analyze", "lra"), sections):
        if rows:
            files.write_csv(run_dir / f"report_{name}.csv", rows)
    header = (
        f"# {cfg.title}\n\nGenerated {datetime.datetime.now():%Y-%m-%d %H:%M} from "
        f"{', '.join(f'`{i}`' for i in cfg.inputs)}: "
        + run_counts(counts)
        + ". Every measured number comes from those run directories, with its device and dtype; "
        "published numbers are marked as such.\n"
    )
    gaps = "## Missing pieces\n\n" + (
        "\n".join(f"- {note}" for note in missing) if missing else "- none\n"
    )
    body = "\n".join(text for text, _, _ in sections if text)
    files.write_text(run_dir / "report.md", f"{header}\n{body}\n{gaps}\n")
    console.print(f"report: {run_counts(counts)}; missing pieces: {len(missing)}", markup=False)
    for note in missing:
        kind = "skipped" if note.startswith("skipped ") or note in run_notes else "missing"
        console.print(f"  [yellow]{kind}[/yellow] {escape(note.removeprefix('skipped '))}")
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/bold] (report.md)")
    return run_dir


def run_counts(counts: dict[str, int]) -> str:
    """``2 pretrain runs, 1 glue run, 0 lra runs``: every job, in the report's order."""
    return ", ".join(f"{n} {job} run{'s' if n != 1 else ''}" for job, n in counts.items())
