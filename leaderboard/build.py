"""Build the leaderboard from result records: ``python -m leaderboard.build [--results DIR] [--out DIR]``.

Reads every record under ``--results`` (default ``results``; malformed files and copies of a
record under another name are skipped and named on stderr), aggregates seeds per (task, dataset,
model, readout) into mean ± sample std (ddof=1; one seed: std 0; a cell names its seed count only
where it differs from the board's) and, from per-clip
values, a 95% bootstrap interval and significance against the blind and random references, ranks
the non-reference models per task, and writes under ``--out`` (default ``leaderboard``):

- ``leaderboard.md``   overview (per readout: each task's primary metric, mean rank, params,
                       collapse monitors when records carry them) and one table per task × readout
                       (with train-split primary metric and flags when records carry them);
                       reference rows after the models
- ``leaderboard.csv``  tidy: task, dataset, readout, model, metric, mean, std, n, ci_low, ci_high,
                       beats, reference
- ``index.html``       the same tables as one self-contained page with sortable columns
- ``plots/*.png``      per-task bars of the primary metric with 95% intervals; primary metric vs
                       parameter count

The feature pictures ``features/<model>__<clip>.png`` under ``--out`` (``python -m leaderboard.demo
--pictures`` draws them) are inputs: the page embeds them and ``leaderboard.md`` links them, in a
section of their own; a build never writes or removes them, and ``--check`` compares against them.

Outputs are deterministic (same records -> byte-identical files; no dates) and written
atomically, all or none: a failed write (a full disk) keeps every earlier file. ``--check`` writes
nothing and exits 1 if any file would change (the drift check of the committed leaderboard). A user
error (no valid record, ``--results`` or ``--out`` not a directory, a README without the leaderboard
block, a failed write) is one ``leaderboard: error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.errors import UserError
from bench.files import atomic_write_bytes, atomic_write_files
from leaderboard.aggregate import Leaderboard, aggregate, load
from leaderboard.page import page
from leaderboard.plots import plot_paths
from leaderboard.plots import plots as render_plots
from leaderboard.tables import markdown, overview_markdown, tidy_csv

PLOTS_DIR = "plots"
PICTURES_DIR = "features"  # feature pictures: inputs of the build, found under the output directory
PAGES = ("leaderboard.md", "leaderboard.csv", "index.html")  # written by every build, whatever the records
README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


class NoRecordsError(UserError, RuntimeError):
    """No valid result record under the results directory; ``skipped`` names the malformed files."""

    def __init__(self, message: str, skipped: list[str] | None = None):
        super().__init__(message)
        self.skipped = skipped or []


class ReadmeError(UserError, ValueError):
    """A README to embed the overview in that cannot be read or written, or has no leaderboard block."""


class OutputError(UserError, OSError):
    """An output directory that is not one, or whose files cannot be written (a full disk, permissions)."""


def render(results_dir: str | Path, with_plots: bool = True,
           images: dict[str, bytes] | None = None) -> tuple[dict[str, bytes], Leaderboard, list[str]]:
    """({relative path: bytes} of every output file, the leaderboard, skipped-file/warning messages);
    ``images``: the feature pictures, {relative path: PNG}, shown but not among the outputs.

    Raises NoRecordsError (one line) when ``results_dir`` holds no valid record."""
    images = images or {}
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise NoRecordsError(f"results directory {results_dir} is not a directory; pass the directory of the "
                             "result records")
    if not results_dir.is_dir():
        raise NoRecordsError(f"results directory {results_dir} does not exist; run `python -m bench.run` first")
    records, errors = load(results_dir)
    if not records:
        skipped = f" ({len(errors)} malformed file(s) skipped)" if errors else ""
        raise NoRecordsError(f"no valid result records under {results_dir}{skipped}", errors)
    lb, warnings = aggregate(records)
    pngs = render_plots(lb) if with_plots else {}
    files = {"leaderboard.md": markdown(lb, plot_paths(lb), list(images)).encode(),
             "leaderboard.csv": tidy_csv(lb).encode(), "index.html": page(lb, pngs, images).encode(), **pngs}
    return dict(sorted(files.items())), lb, [f"skipped {e}" for e in errors] + [f"warning: {w}" for w in warnings]


def feature_pictures(out_dir: Path) -> dict[str, bytes]:
    """{``features/<name>.png``: bytes} of the feature pictures under ``out_dir``, by name (none: {})."""
    try:
        found = sorted(p for p in (out_dir / PICTURES_DIR).glob("*.png") if p.is_file())
        return {f"{PICTURES_DIR}/{p.name}": p.read_bytes() for p in found}
    except OSError as exc:
        where = out_dir / PICTURES_DIR
        raise OutputError(f"{where}: cannot read the feature pictures ({exc.strerror or exc})") from exc


def _stale(out_dir: Path, files: dict[str, bytes]) -> list[str]:
    """Generated plots from an earlier build that this build no longer produces."""
    plot_dir = out_dir / PLOTS_DIR
    if not plot_dir.is_dir():
        return []
    return sorted(p.relative_to(out_dir).as_posix() for p in plot_dir.glob("*.png")
                  if p.relative_to(out_dir).as_posix() not in files)


def check_out_dir(out_dir: Path) -> None:
    """OutputError when ``out_dir`` exists and is not a directory (a missing one is created)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output directory {out_dir} is not a directory; pass --out a directory (a missing one "
                          "is created)")


def has_build(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds an earlier build."""
    return any((out_dir / name).is_file() for name in PAGES)


def write_build(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write the ``files`` that differ from those under ``out_dir``, all or none, and remove stale plots;
    a failed write is an OutputError and leaves every earlier file as it was."""
    changed = {out_dir / rel: data for rel, data in files.items()
               if not ((out_dir / rel).is_file() and (out_dir / rel).read_bytes() == data)}
    try:
        atomic_write_files(changed)
        for path in changed:
            os.chmod(path, 0o644)  # mkstemp creates 0600; these are public pages and tables
        for rel in _stale(out_dir, files):
            (out_dir / rel).unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write the leaderboard files ({exc.strerror or exc}); the files "
                          "there are unchanged") from exc


def _report(messages: list[str]) -> None:
    for msg in messages:
        print(f"leaderboard: {msg}", file=sys.stderr)


def build(results_dir: str | Path = "results",
          out_dir: str | Path = "leaderboard") -> tuple[dict[str, Path], Leaderboard]:
    """Write every leaderboard file under ``out_dir``; return ({relative path: written path}, leaderboard).

    Skipped files are reported on stderr; stale plots of an earlier build are removed."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    try:
        files, lb, messages = render(results_dir, images=feature_pictures(out_dir))
    except NoRecordsError as exc:
        _report([f"skipped {e}" for e in exc.skipped])
        raise
    _report(messages)
    write_build(out_dir, files)
    return {rel: out_dir / rel for rel in files}, lb


def check(results_dir: str | Path = "results", out_dir: str | Path = "leaderboard",
          with_plots: bool = True) -> list[str]:
    """Relative paths of the files a build would create, change or (stale plots) remove; [] if none.

    ``with_plots=False`` compares only the Markdown and CSV (PNG bytes, and the HTML page that
    embeds them, can differ across matplotlib/freetype versions)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    files, _, _ = render(results_dir, with_plots=with_plots, images=feature_pictures(out_dir))
    if not with_plots:
        files = {k: v for k, v in files.items() if k != "index.html"}
    changed = [rel for rel, data in files.items()
               if not ((path := out_dir / rel).is_file() and path.read_bytes() == data)]
    return sorted(changed + (_stale(out_dir, files) if with_plots else []))


def with_overview(readme: str, overview: str, source: str = "README") -> str:
    """``readme`` (the text of the file ``source``) with the text between the leaderboard markers
    replaced by ``overview``."""
    head, start, rest = readme.partition(README_START)
    _, end, tail = rest.partition(README_END)
    if not (start and end):
        raise ReadmeError(f"{source}: has no {README_START} ... {README_END} block for the leaderboard")
    return f"{head}{start}\n{overview}{end}{tail}"


def embed_in_readme(readme: str | Path, lb: Leaderboard) -> bool:
    """Write the overview tables into ``readme`` (atomically); True if the file changed."""
    path = Path(readme)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReadmeError(f"{path}: cannot read the README ({exc.strerror or exc})") from exc
    new = with_overview(text, overview_markdown(lb), str(path))
    if new != text:
        try:
            atomic_write_bytes(path, new.encode())
            os.chmod(path, 0o644)
        except OSError as exc:
            raise ReadmeError(f"{path}: cannot write the README ({exc.strerror or exc}); it is unchanged") from exc
    return new != text


def publish(results_dir: str | Path, out_dir: str | Path, readme: str | Path | None = None) -> Leaderboard:
    """Build the leaderboard, write its overview into ``readme`` (if given), print a summary and
    the overview tables; the one ending of ``python -m leaderboard.build`` and ``make demo``."""
    written, lb = build(results_dir, out_dir)
    if readme and embed_in_readme(readme, lb):
        print(f"leaderboard: updated the overview in {readme}")
    print(f"leaderboard: wrote {len(written)} files under {out_dir}/ "
          f"({lb.n_records} records, {len(lb.groups)} groups)\n")
    print(overview_markdown(lb), end="")
    return lb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="directory of result records (default: results)")
    parser.add_argument("--out", default="leaderboard", help="output directory (default: leaderboard)")
    parser.add_argument("--readme", help="also write the overview into this README's leaderboard block")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the files a build would change and exit 1 if any")
    args = parser.parse_args(argv)
    try:
        if args.check:
            changed = check(args.results, args.out)
            for rel in changed:
                print(f"would change: {Path(args.out) / rel}")
            if changed:
                what = (f"{len(changed)} file(s) out of date" if has_build(Path(args.out)) else
                        f"{args.out} holds no build yet ({len(changed)} file(s) to create)")
                print(f"leaderboard: {what}; run python -m leaderboard.build --results {args.results} "
                      f"--out {args.out}", file=sys.stderr)
                return 1
            print(f"leaderboard: {args.out} is up to date with {args.results}")
            return 0
        publish(args.results, args.out, args.readme)
    except UserError as exc:
        print(f"leaderboard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the board is written all or none, the README block atomically
        print("leaderboard: interrupted; every file is written whole or not at all: a rerun finishes the build",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
