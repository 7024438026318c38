"""Leaderboard build: seed aggregation, direction-aware bold and ranks, references, bootstrap intervals and
significance marks, malformed records, determinism, CLI.

Synthetic schema-1 records (no per-clip values, so no intervals), values chosen so every number below can be
checked by hand:

depth (primary abs_rel ↓, also delta1 ↑), attentive readout
  mae_t        abs_rel 0.10 0.12 0.14 -> 0.12 ± 0.02      delta1 0.90 0.80 0.85 -> 0.85 ± 0.05
  layerlock_t  abs_rel 0.15 0.17      -> 0.16 ± 0.0141    delta1 0.95 0.93      -> 0.94 ± 0.0141
  random_t     abs_rel 0.50 0.60 0.70 -> 0.60 ± 0.10      delta1 0.30 ×3        -> 0.30 ± 0
  ranks: mae_t 1, layerlock_t 2; random_t is a reference (shown after the models, not ranked)
action (primary top1 ↑, also loss ↓), attentive readout
  mae_t        top1 0.55 0.65 -> 0.60   (0.55 + 0.65 != 1.2 in floats: a tie only at rank precision)
  layerlock_t  top1 0.50 0.70 -> 0.60
  random_t     top1 0.10 0.20 -> 0.15
  ranks: mae_t 1.5, layerlock_t 1.5
mean rank: mae_t 1.25, layerlock_t 1.75
depth, linear readout: mae_t, one seed (abs_rel 0.30) -> "(n=1)", std 0, n 1

Schema-2 records with per-clip values (``PER_CLIP``) are described where they are built.
"""
from __future__ import annotations

import csv
import errno
import functools
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from typing import Any

import numpy as np
import pytest

from bench.results import ResultRecord, write_record
from leaderboard import build as lbuild
from leaderboard.aggregate import aggregate, average_ranks, baselines, load
from leaderboard.intervals import bootstrap, compare
from leaderboard.tables import overview_markdown, overview_tables, task_tables

ROOT = Path(__file__).resolve().parents[1]

DEPTH = {
    "mae_t": {"abs_rel": [0.10, 0.12, 0.14], "delta1": [0.90, 0.80, 0.85]},
    "layerlock_t": {"abs_rel": [0.15, 0.17], "delta1": [0.95, 0.93]},
    "random_t": {"abs_rel": [0.50, 0.60, 0.70], "delta1": [0.30, 0.30, 0.30]},
}
ACTION = {
    "mae_t": {"top1": [0.55, 0.65], "loss": [1.0, 1.2]},
    "layerlock_t": {"top1": [0.50, 0.70], "loss": [0.9, 1.1]},
    "random_t": {"top1": [0.10, 0.20], "loss": [2.0, 2.2]},
}


def record(task: str, model: str, seed: int, metrics: dict[str, float], readout: str = "attentive",
           config: dict | None = None, **fields: Any) -> ResultRecord:
    """A record of ``task`` on the synthetic test split; ``fields`` sets schema-2 fields (per_clip, flags, ...).
    Without per-clip values it is a schema-1 record (a schema-2 record always has them)."""
    primary, directions = {"depth": ("abs_rel", {"abs_rel": False, "delta1": True}),
                           "action": ("top1", {"top1": True, "loss": False})}[task]
    return ResultRecord(task=task, dataset="synthetic", split="test", model=model, checkpoint_sha256="0" * 64,
                        readout=readout, seed=seed, metrics=metrics, directions=directions, primary_metric=primary,
                        higher_is_better=directions[primary], config=config or {"seed": seed},
                        created="2020-01-01T00:00:00+00:00", schema_version=2 if fields.get("per_clip") else 1,
                        **fields)


def write_all(results: Path) -> Path:
    for task, table in (("depth", DEPTH), ("action", ACTION)):
        for model, metrics in table.items():
            for seed in range(len(next(iter(metrics.values())))):
                write_record(record(task, model, seed, {k: v[seed] for k, v in metrics.items()}), results)
    write_record(record("depth", "mae_t", 0, {"abs_rel": 0.30, "delta1": 0.70}, readout="linear"), results)
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def lb(results):
    records, errors = load(results)
    assert errors == []
    board, warnings = aggregate(records)
    assert warnings == []
    return board


@pytest.fixture(scope="module")
def built(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    lbuild.build(results, out)
    return out


def _task(lb, name):
    return next(t for t in lb.tasks if t.task == name)


def test_seeds_aggregate_to_mean_and_sample_std(lb):
    depth = _task(lb, "depth")
    g = lb.group(depth, "mae_t", "attentive")
    assert g.seeds == (0, 1, 2)
    assert g.metrics["abs_rel"].mean == pytest.approx(0.12)
    assert g.metrics["abs_rel"].std == pytest.approx(0.02)          # sqrt((0.02² + 0 + 0.02²) / (3 - 1))
    assert g.metrics["abs_rel"].n == 3
    g = lb.group(depth, "layerlock_t", "attentive")
    assert g.metrics["abs_rel"].std == pytest.approx(math.sqrt(2 * 0.01 ** 2))  # ddof=1 with n=2
    assert lb.group(depth, "random_t", "attentive").metrics["delta1"].std == 0.0
    single = lb.group(depth, "mae_t", "linear").metrics["abs_rel"]
    assert (single.mean, single.std, single.n) == (0.30, 0.0, 1)
    assert depth.metrics == ["abs_rel", "delta1"] and depth.higher == {"abs_rel": False, "delta1": True}


def test_task_tables_bold_the_best_by_direction(lb):
    tables = {t.title: t for t in task_tables(lb)}
    assert list(tables) == ["action · synthetic · attentive readout", "depth · synthetic · attentive readout",
                            "depth · synthetic · linear readout"]
    depth = tables["depth · synthetic · attentive readout"]
    labels = [c.label for c in depth.columns]
    assert labels == ["rank", "model", "seeds", "abs_rel ↓ (primary)", "delta1 ↑"]
    rows = {r[1].text: r for r in depth.rows}
    assert [r[1].text for r in depth.rows] == ["mae_t", "layerlock_t"]   # best primary first
    assert rows["mae_t"][3].text == "0.1200 ± 0.0200"
    assert rows["layerlock_t"][3].text == "0.1600 ± 0.0141"
    # abs_rel is lower-is-better: the smallest mean is bold, not the largest
    assert [m for m, r in rows.items() if r[3].bold] == ["mae_t"]
    assert [m for m, r in rows.items() if r[4].bold] == ["layerlock_t"]
    assert [r[0].text for r in depth.rows] == ["1", "2"]
    # the untrained encoder is a reference: after the models, unranked, never bold
    assert [[c.text for c in r] for r in depth.references] == [
        ["—", "random_t (reference)", "3", "0.6000 ± 0.1000", "0.3000 ± 0.0000"]]
    assert not any(c.bold for r in depth.references for c in r)
    action = tables["action · synthetic · attentive readout"]
    # a tie at rank precision: both bold, both rank 1.5, order by name
    assert [(r[1].text, r[0].text, r[3].bold) for r in action.rows] == [
        ("layerlock_t", "1.5", True), ("mae_t", "1.5", True)]
    linear = tables["depth · synthetic · linear readout"]
    assert linear.rows[0][3].text == "0.3000 (n=1)"


def test_mean_rank_with_a_tie(lb):
    assert average_ranks({"a": 2.0, "b": 1.0, "c": 2.0, "d": 0.5}, higher_is_better=True) == {
        "a": 1.5, "c": 1.5, "b": 3.0, "d": 4.0}
    assert average_ranks({"a": 2.0, "b": 1.0, "c": 2.0}, higher_is_better=False) == {"b": 1.0, "a": 2.5, "c": 2.5}
    rows = lb.overview("attentive")
    assert [(r.model, r.mean_rank) for r in rows] == [("mae_t", 1.25), ("layerlock_t", 1.75), ("random_t", None)]
    assert rows[2].ranks == {} and lb.references == {"random_t": "random"}
    assert rows[0].ranks == {("action", "synthetic"): 1.5, ("depth", "synthetic"): 1.0}
    (overview_att, overview_lin) = overview_tables(lb)
    assert [c.label for c in overview_att.columns] == ["model", "params", "action: top1 ↑", "depth: abs_rel ↓",
                                                       "mean rank ↓"]
    first = overview_att.rows[0]
    assert [c.text for c in first] == ["mae_t", "3.7M", "0.6000 ± 0.0707", "0.1200 ± 0.0200", "1.25"]
    assert first[-1].bold and not overview_att.rows[1][-1].bold
    assert [c.text for c in overview_att.references[0]] == ["random_t (reference)", "3.7M", "0.1500 ± 0.0707",
                                                            "0.6000 ± 0.1000", "—"]
    # the linear readout has depth results only: its overview has no action column
    assert [c.label for c in overview_lin.columns] == ["model", "params", "depth: abs_rel ↓", "mean rank ↓"]


def test_outputs_markdown_csv_html_plots(built, lb):
    names = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert names == ["index.html", "leaderboard.csv", "leaderboard.md", "plots/action__synthetic.png",
                     "plots/depth__synthetic.png", "plots/headline.png", "plots/params.png"]
    md = (built / "leaderboard.md").read_text()
    assert "| 1 | mae_t | 3 | **0.1200 ± 0.0200** | 0.8500 ± 0.0500 |" in md
    assert "| — | random_t (reference) | 3 | 0.6000 ± 0.1000 | 0.3000 ± 0.0000 |" in md
    assert "| **mae_t** |" not in md and "(plots/params.png)" in md
    assert "[" not in md.split("## Overview")[1].split("## Plots")[0]   # schema 1: no intervals, no marks
    rows = list(csv.DictReader(io.StringIO((built / "leaderboard.csv").read_text())))
    assert list(rows[0]) == ["task", "dataset", "readout", "model", "metric", "mean", "std", "n",
                             "ci_low", "ci_high", "beats", "reference", "head"]
    assert {(r["ci_low"], r["ci_high"], r["beats"]) for r in rows} == {("", "", "")}
    assert {r["model"] for r in rows if r["reference"] == "random"} == {"random_t"}
    assert len(rows) == 2 * 3 * 2 + 2           # (task × model × metric) attentive + mae_t linear depth
    row = next(r for r in rows if (r["task"], r["model"], r["metric"], r["readout"]) ==
               ("depth", "layerlock_t", "abs_rel", "attentive"))
    assert float(row["mean"]) == pytest.approx(0.16) and float(row["std"]) == pytest.approx(0.014142, abs=1e-6)
    assert row["n"] == "2"
    assert [r["n"] for r in rows if r["readout"] == "linear"] == ["1", "1"]
    html = (built / "index.html").read_text()
    assert "<strong>0.1200 ± 0.0200</strong>" in html and "data:image/png;base64," in html
    assert '<tbody class="references">\n<tr><td class="num" data-sort="">—</td>' \
           '<td class="text" data-sort="random_t">random_t (reference)</td>' in html
    assert "http://" not in html and "https://" not in html       # self-contained
    for f in ("plots/depth__synthetic.png", "plots/params.png"):
        assert (built / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in (built / f).read_bytes()


def test_builds_are_byte_identical_and_check_detects_drift(results, built, tmp_path):
    again, _ = lbuild.build(results, tmp_path / "again")
    for rel, path in again.items():
        assert path.read_bytes() == (built / rel).read_bytes(), rel
    assert lbuild.check(results, built) == []
    assert lbuild.check(results, built, with_plots=False) == []
    # drift: one changed record changes the tables and its task's plot; a stale plot is reported
    moved = tmp_path / "results"
    write_all(moved)
    write_record(record("action", "random_t", 0, {"top1": 0.99, "loss": 2.0}), moved)
    (built / "plots" / "old__task.png").write_bytes(b"stale")
    try:
        assert lbuild.check(moved, built) == ["index.html", "leaderboard.csv", "leaderboard.md",
                                              "plots/action__synthetic.png", "plots/headline.png",
                                              "plots/old__task.png", "plots/params.png"]
        assert lbuild.check(moved, built, with_plots=False) == ["leaderboard.csv", "leaderboard.md"]
    finally:
        (built / "plots" / "old__task.png").unlink()


def test_malformed_records_are_named_and_skipped(results, tmp_path, capsys):
    bad = tmp_path / "results"
    write_all(bad)
    (bad / "broken.json").write_text("{not json")
    (bad / "nested").mkdir()
    (bad / "nested" / "nan_metric.json").write_text(
        json.dumps({**json.loads(next(bad.glob("depth__*.json")).read_text()), "metrics": {"abs_rel": float("nan")}}))
    (bad / "no_primary.json").write_text(json.dumps({"schema_version": 1, "task": "depth"}))
    out = tmp_path / "out"
    written, _ = lbuild.build(bad, out)
    err = capsys.readouterr().err
    assert "broken.json: not valid JSON" in err
    assert "nested/nan_metric.json: metrics {'abs_rel': nan} are not finite numbers within ±1e+100" in err
    assert "no_primary.json: missing fields" in err
    assert len(err.strip().splitlines()) == 3
    # the good records still give exactly the clean leaderboard
    assert (out / "leaderboard.csv").read_bytes() == lbuild.render(results, with_plots=False)[0]["leaderboard.csv"]
    assert set(written) >= {"leaderboard.md", "leaderboard.csv", "index.html"}


CANONICAL = "depth__synthetic__mae_t__attentive__seed0.json"


@pytest.mark.parametrize("copy", ["copy.json", "zzz_copy.json", "nested/copy.json"])
def test_a_duplicate_never_replaces_the_canonical_record(results, tmp_path, copy, capsys):
    """A copy of an evaluation under another name is skipped and named, wherever it sorts."""
    dup = write_all(tmp_path / "results")
    (dup / copy).parent.mkdir(exist_ok=True)
    (dup / copy).write_text(json.dumps({**json.loads((dup / CANONICAL).read_text()), "metrics": {"abs_rel": 0.99,
                                                                                                 "delta1": 0.1}}))
    written, board = lbuild.build(dup, tmp_path / "out")
    assert capsys.readouterr().err == (f"leaderboard: skipped {copy}: duplicate of {CANONICAL} "
                                       "(same task, dataset, model, readout and seed 0)\n")
    assert board.group(_task(board, "depth"), "mae_t", "attentive").metrics["abs_rel"].mean == pytest.approx(0.12)
    assert written["leaderboard.csv"].read_bytes() == lbuild.render(results, with_plots=False)[0]["leaderboard.csv"]


def test_of_two_canonical_copies_the_first_path_wins(tmp_path):
    dup = write_all(tmp_path / "results")
    (dup / "a").mkdir()
    (dup / "a" / CANONICAL).write_text((dup / CANONICAL).read_text())
    records, errors = load(dup)
    assert errors == [f"{CANONICAL}: duplicate of a/{CANONICAL} (same task, dataset, model, readout and seed 0)"]
    board, warnings = aggregate(records)
    assert warnings == [] and board.group(_task(board, "depth"), "mae_t", "attentive").metrics["abs_rel"].n == 3


def test_the_same_seed_under_other_task_options_is_no_duplicate(tmp_path):
    res = tmp_path / "results"
    for align in ("median", "none"):
        config = {"seed": 0, "task": {"name": "depth", "align": align}}
        write_record(record("depth", "mae_t", 0, {"abs_rel": 0.1, "delta1": 0.9}, config=config), res / align)
    records, errors = load(res)
    assert errors == [] and len(records) == 2
    assert sorted(t.task for t in aggregate(records)[0].tasks) == ["depth[align=median]", "depth[align=none]"]


def test_params_from_config_and_collapse_column(tmp_path):
    res = tmp_path / "results"
    write_record(record("depth", "mae_t", 0, {"abs_rel": 0.2, "delta1": 0.8},
                        config={"collapse": {"feat_std": 0.5, "eff_rank": 40.0}}), res)
    write_record(record("depth", "public_vit", 0, {"abs_rel": 0.1, "delta1": 0.9},
                        config={"model": {"name": "public_vit", "num_params": 22_000_000}}), res)
    write_record(record("depth", "mystery", 0, {"abs_rel": 0.3, "delta1": 0.7}), res)
    board, _ = aggregate(load(res)[0])
    assert board.params == {"mae_t": 3_731_136, "public_vit": 22_000_000}
    (table,) = overview_tables(board)
    assert [c.label for c in table.columns] == ["model", "params", "depth: abs_rel ↓", "mean rank ↓", "eff rank",
                                                "feat std"]
    assert [[c.text for c in r] for r in table.rows] == [
        ["public_vit", "22.0M", "0.1000 (n=1)", "1.00", "—", "—"],
        ["mae_t", "3.7M", "0.2000 (n=1)", "2.00", "40", "0.5"],
        ["mystery", "—", "0.3000 (n=1)", "3.00", "—", "—"]]


def test_cli_prints_overview(results, tmp_path, capsys):
    assert lbuild.main(["--results", str(results), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "### Overview — attentive readout" in out and "| mae_t | 3.7M |" in out
    assert lbuild.main(["--results", str(results), "--out", str(tmp_path / "out"), "--check"]) == 0
    (tmp_path / "out" / "leaderboard.md").write_text("edited")
    assert lbuild.main(["--results", str(results), "--out", str(tmp_path / "out"), "--check"]) == 1
    assert "would change: " in capsys.readouterr().out


def test_an_overview_shows_only_the_tasks_its_readout_has(tmp_path):
    """A training-free task has no attentive column and a trained one no propagation column; a
    model missing one of its readout's tasks is ranked over the tasks it has, and says so."""
    res = tmp_path / "results"
    for model, value in (("mae_t", 0.3), ("random_t", 0.4)):
        write_record(record("depth", model, 0, {"abs_rel": value, "delta1": 0.5}), res)
        write_record(record("action", model, 0, {"top1": value, "loss": 1.0}), res)
        write_record(record("action", model, 0, {"top1": value, "loss": 1.0}, readout="propagation"), res)
    write_record(record("depth", "layerlock_t", 0, {"abs_rel": 0.2, "delta1": 0.5}), res)
    tables = {t.title: t for t in overview_tables(aggregate(load(res)[0])[0])}
    assert [c.label for c in tables["attentive readout"].columns][2:-1] == ["action: top1 ↑", "depth: abs_rel ↓"]
    assert [r[-1].text for r in tables["attentive readout"].rows] == ["1.50", "1.00 (1/2 tasks)"]
    assert [c.label for c in tables["propagation readout"].columns][2:-1] == ["action: top1 ↑"]
    assert [r[-1].text for r in tables["propagation readout"].rows] == ["1.00"]


def test_cli_without_valid_records_fails_clearly(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "junk.json").write_text("[]")
    proc = subprocess.run([sys.executable, "-m", "leaderboard.build", "--results", str(tmp_path / "results"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "leaderboard: skipped junk.json: expected a JSON object" in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"leaderboard: error: no valid result records under {tmp_path / 'results'} " \
                        "(1 malformed file(s) skipped)"
    assert not (tmp_path / "out").exists()


def test_readme_block_is_replaced_and_a_missing_block_is_an_error(results, tmp_path):
    lb = aggregate(load(results)[0])[0]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{lbuild.README_START}\nold table\n{lbuild.README_END}\nafter\n")
    assert lbuild.embed_in_readme(readme, lb) is True
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
    assert overview_markdown(lb) in text
    assert lbuild.embed_in_readme(readme, lb) is False  # idempotent
    with pytest.raises(ValueError, match="leaderboard:start"):
        lbuild.with_overview("no block here", "table")


def test_cli_user_errors_are_one_line_and_bugs_keep_their_traceback(results, tmp_path, capsys, monkeypatch):
    out = ["--results", str(results), "--out", str(tmp_path / "out")]
    (tmp_path / "plain.md").write_text("# no block\n")
    for readme, problem in ((tmp_path / "missing.md", "cannot read the README (No such file or directory)"),
                            (tmp_path / "plain.md", f"has no {lbuild.README_START} ... {lbuild.README_END} block "
                                                    "for the leaderboard")):
        assert lbuild.main([*out, "--readme", str(readme)]) == 2
        assert capsys.readouterr().err == f"leaderboard: error: {readme}: {problem}\n"

    def bug(*args):
        raise ValueError("an internal invariant")

    monkeypatch.setattr(lbuild, "aggregate", bug)
    with pytest.raises(ValueError, match="an internal invariant"):
        lbuild.main(out)


def test_a_file_where_a_directory_belongs_is_one_line_exit_2(results, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    cases = ((["--results", str(a_file), "--out", str(tmp_path / "out")],
              f"results directory {a_file} is not a directory; pass the directory of the result records"),
             (["--results", str(results), "--out", str(a_file)],
              f"output directory {a_file} is not a directory; pass --out a directory (a missing one is created)"))
    for args, message in cases:
        for check in ([], ["--check"]):
            assert lbuild.main([*args, *check]) == 2
            assert capsys.readouterr().err == f"leaderboard: error: {message}\n"
    assert a_file.read_text() == "not a directory" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["missing", "empty"])
def test_check_says_when_the_output_directory_holds_no_build(results, tmp_path, out, capsys):
    """Drift (exit 1), said as what it is: nothing was built there yet."""
    if out == "empty":
        (tmp_path / out).mkdir()
    args = ["--results", str(results), "--out", str(tmp_path / out)]
    assert lbuild.main([*args, "--check"]) == 1
    count = len(lbuild.render(results)[0])
    assert capsys.readouterr().err == (f"leaderboard: {tmp_path / out} holds no build yet ({count} file(s) to create); "
                                       f"run python -m leaderboard.build {' '.join(args)}\n")


def fsync_fails_for(monkeypatch, part: str) -> None:
    """Make ``os.fsync`` raise ENOSPC for the files whose path contains ``part`` (a disk that fills up
    while that file is written; Linux: the path comes from /proc/self/fd)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_while_writing_keeps_every_earlier_file(results, tmp_path, monkeypatch, capsys):
    """All files or none: the disk fills up while the last file is written, after the others are on disk."""
    out = tmp_path / "out"
    lbuild.build(results, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    moved = write_all(tmp_path / "moved")
    write_record(record("action", "random_t", 0, {"top1": 0.99, "loss": 2.0}), moved)
    fsync_fails_for(monkeypatch, ".params.png.")
    capsys.readouterr()
    assert lbuild.main(["--results", str(moved), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"leaderboard: error: {out}: cannot write the leaderboard files (No space left "
                                       "on device); the files there are unchanged\n")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no new file, no temp file left


def test_a_full_disk_while_embedding_the_overview_keeps_the_readme(results, tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{lbuild.README_START}\nold table\n{lbuild.README_END}\n")
    fsync_fails_for(monkeypatch, ".README.md.")
    assert lbuild.main(["--results", str(results), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"leaderboard: error: {readme}: cannot write the README (No "
                                                        "space left on device); it is unchanged")
    assert "old table" in readme.read_text() and sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "out"]


# Schema 2, depth (abs_rel ↓), attentive readout, 2 seeds × 16 clips: seed s of a model has per-clip abs_rel
# level ∓ 0.02 on even / odd clips with weights 1 / 3 (level = base + 0.02·s), so its pooled abs_rel is level + 0.01:
#   mae_t 0.42 ± 0.0141, 0.10 below blind and 0.05 below random_t on every clip -> beats both (†‡)
#   layerlock_t equals blind clip for clip -> no mark; random_t beats blind (†); supervised_t beats both (†‡)
# mae_t also has train abs_rel 0.31, 0.33 (-> 0.3200 ± 0.0141); flags: mae_t seed 0 train_test_gap,
# layerlock_t seed 1 loss_still_falling.
PER_CLIP = {"mae_t": 0.40, "layerlock_t": 0.50, "blind": 0.50, "random_t": 0.45, "supervised_t": 0.20}
FLAGS = {("mae_t", 0): ["train_test_gap"], ("layerlock_t", 1): ["loss_still_falling"]}


def clips(level: float, n: int = 16, spread: float = 0.02) -> dict[str, list[float]]:
    """Per-clip values level ∓ spread (even / odd clips) with weights 1 / 3: weighted mean level + spread / 2."""
    return {"values": [level + (spread if k % 2 else -spread) for k in range(n)],
            "weights": [3.0 if k % 2 else 1.0 for k in range(n)]}


def write_per_clip(results: Path) -> Path:
    for model, base in PER_CLIP.items():
        for seed in (0, 1):
            level = base + 0.02 * seed
            train = {"abs_rel": level + 0.01 - 0.1} if model == "mae_t" else {}
            write_record(record("depth", model, seed, {"abs_rel": level + 0.01, "delta1": 0.9 - level},
                                per_clip=clips(level), train_metrics=train, flags=FLAGS.get((model, seed), [])),
                         results)
    return results


@pytest.fixture(scope="module")
def per_clip_results(tmp_path_factory) -> Path:
    return write_per_clip(tmp_path_factory.mktemp("per_clip"))


@pytest.fixture(scope="module")
def per_clip_lb(per_clip_results):
    records, errors = load(per_clip_results)
    board, warnings = aggregate(records)
    assert errors == [] and warnings == []
    return board


def _width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_clips():
    rng = np.random.default_rng(0)
    few, many = (bootstrap(rng.random((1, n)), np.ones((1, n)), "g") for n in (16, 1024))
    for b in (few, many):
        low, high = b.interval()
        assert low < b.estimate < high
    assert _width(many.interval()) < _width(few.interval()) / 4   # ~ 1/sqrt(clips): 8 times narrower
    # deterministic; seed draws differ between groups (streams named by the group), clip draws do not
    values = rng.random((3, 16))
    again = bootstrap(values, np.ones((3, 16)), "g")
    assert np.array_equal(again.draws, bootstrap(values, np.ones((3, 16)), "g").draws)
    assert not np.array_equal(again.draws, bootstrap(values, np.ones((3, 16)), "h").draws)


def test_bootstrap_of_constant_clips_and_weighted_means():
    assert bootstrap(np.full((1, 8), 0.25), np.ones((1, 8)), "c").interval() == pytest.approx((0.25, 0.25))
    # two seeds, each constant: only the seed resampling varies -> draws 0.2, 0.3 or 0.4
    two = bootstrap(np.array([[0.2] * 8, [0.4] * 8]), np.ones((2, 8)), "c")
    assert two.estimate == pytest.approx(0.3) and two.interval() == pytest.approx((0.2, 0.4))
    # Σ w·v / Σ w = (1·1 + 0·2 + 3·4) / 4; a zero-weight clip never breaks the interval (draws of it alone: NaN)
    weighted = bootstrap(np.array([[1.0, 2.0, 4.0]]), np.array([[1.0, 0.0, 3.0]]), "w")
    assert weighted.estimate == pytest.approx(3.25)
    assert all(math.isfinite(x) for x in weighted.interval()) and np.isnan(weighted.draws).any()
    # the helper's clips: weighted mean level + spread / 2
    c = clips(0.40)
    assert bootstrap(np.array([c["values"]]), np.array([c["weights"]]), "h").estimate == pytest.approx(0.41)


def test_paired_comparison_sees_a_uniform_margin_inside_overlapping_intervals():
    base = np.random.default_rng(1).random(64)
    values, weights = np.stack([base, base + 0.001]), np.ones((2, 64))
    blind = bootstrap(values, weights, "blind")
    better = bootstrap(values - 0.05, weights, "model")       # lower is better: 0.05 better on every clip
    same = bootstrap(values, weights, "same")
    assert better.interval()[1] > blind.interval()[0]        # the intervals overlap: clip noise ≫ 0.05
    result = compare(better, blind, higher_is_better=False)
    assert result.significant and result.p_better == 1.0 and result.interval[0] > 0
    assert not compare(same, blind, higher_is_better=False).significant
    assert not compare(blind, better, higher_is_better=False).significant
    assert compare(better, blind, higher_is_better=True).p_better == 0.0
    assert compare(better, bootstrap(values[:, :32], weights[:, :32], "short"), higher_is_better=False) is None


def test_baselines_are_blind_and_the_random_encoder_of_the_same_size():
    present = {"blind", "random_t", "random_b", "mae_b", "public_vit"}
    assert baselines("mae_b", present) == ("blind", "random_b")
    assert baselines("mae_s", present) == ("blind",)                  # no random_s row
    assert baselines("public_vit", present) == ("blind", "random_b", "random_t")
    assert baselines("random_t", present) == ("blind",) and baselines("blind", {"blind"}) == ()
    external = present | {"dinov2_s14_imgfocus", "random_dinov2_s14_imgfocus"}
    assert baselines("dinov2_s14_imgfocus", external) == ("blind", "random_dinov2_s14_imgfocus")  # its own twin


def test_groups_get_intervals_marks_train_metric_and_flags(per_clip_lb):
    lb = per_clip_lb
    depth = _task(lb, "depth")
    beats = {m: lb.group(depth, m, "attentive").beats for m in PER_CLIP}
    assert beats == {"mae_t": ("blind", "random_t"), "layerlock_t": (), "blind": (), "random_t": ("blind",),
                     "supervised_t": ("blind", "random_t")}
    g = lb.group(depth, "mae_t", "attentive")
    low, high = g.ci
    assert g.metrics["abs_rel"].mean == pytest.approx(0.42) and 0.38 <= low < 0.42 < high <= 0.44
    assert (g.train_primary.mean, g.train_primary.n) == (pytest.approx(0.32), 2) and g.flags == ("train_test_gap",)
    assert lb.group(depth, "layerlock_t", "attentive").train_primary is None
    # references are shown after the models in zoo order, not ranked
    assert lb.task_ranks(depth, "attentive") == {"mae_t": 1.0, "layerlock_t": 2.0}
    assert lb.task_models(depth, "attentive") == ["mae_t", "layerlock_t", "blind", "random_t", "supervised_t"]
    (table,) = task_tables(lb)
    assert [c.label for c in table.columns] == ["rank", "model", "seeds", "abs_rel ↓ (primary)", "delta1 ↑",
                                                "train abs_rel ↓", "flags"]
    assert [c.text for c in table.rows[0]] == ["1", "mae_t", "2", f"0.4200 ± 0.0141 [{low:.3f}, {high:.3f}] †‡",
                                               "0.4900 ± 0.0141", "0.3200 ± 0.0141", "train_test_gap"]
    assert table.rows[1][3].text.endswith("]") and table.rows[1][-1].text == "loss_still_falling"
    assert [(r[0].text, r[1].text) for r in table.references] == [
        ("—", "blind (reference)"), ("—", "random_t (reference)"), ("—", "supervised_t (reference)")]
    assert table.references[1][3].text.endswith("] †")
    # supervised_t has the best abs_rel, but bold marks the best model
    assert table.rows[0][3].bold and not any(c.bold for r in table.references for c in r)
    (overview,) = overview_tables(lb)
    assert [r[0].text for r in overview.rows] == ["mae_t", "layerlock_t"]
    assert [r[-1].text for r in overview.references] == ["—", "—", "—"]


def test_per_clip_outputs_in_markdown_csv_html(per_clip_results, per_clip_lb, tmp_path):
    written, _ = lbuild.build(per_clip_results, tmp_path / "out")
    again, _ = lbuild.build(per_clip_results, tmp_path / "again")
    for rel, path in again.items():
        assert path.read_bytes() == written[rel].read_bytes(), rel
    g = per_clip_lb.group(_task(per_clip_lb, "depth"), "mae_t", "attentive")
    md = written["leaderboard.md"].read_text()
    assert f"| 1 | mae_t | 2 | **0.4200 ± 0.0141 [{g.ci[0]:.3f}, {g.ci[1]:.3f}] †‡** |" in md
    assert "| — | blind (reference) | 2 |" in md and "† marks a result significantly better than `blind`" in md
    rows = list(csv.DictReader(io.StringIO(written["leaderboard.csv"].read_text())))
    row = {(r["model"], r["metric"]): r for r in rows}
    assert (float(row["mae_t", "abs_rel"]["ci_low"]), float(row["mae_t", "abs_rel"]["ci_high"])) == g.ci
    assert row["mae_t", "abs_rel"]["beats"] == "blind;random_t" and row["mae_t", "abs_rel"]["reference"] == ""
    assert (row["mae_t", "delta1"]["ci_low"], row["mae_t", "delta1"]["beats"]) == ("", "")
    assert {m: r["reference"] for (m, metric), r in row.items() if metric == "abs_rel"} == {
        "blind": "blind", "layerlock_t": "", "mae_t": "", "random_t": "random", "supervised_t": "supervised"}
    html = written["index.html"].read_text()
    references = html.split('<tbody class="references">')[1].split("</tbody>")[0]
    assert [m for m in PER_CLIP if f"{m} (reference)" in references] == ["blind", "random_t", "supervised_t"]
    assert "<code>blind</code>" in html and "mae_t (reference)" not in html


def test_unusable_per_clip_values_warn_and_give_no_interval(tmp_path):
    res = write_per_clip(tmp_path / "results")
    # a seed whose per-clip values do not average to its abs_rel; a group mixing schema-1 and schema-2 seeds
    write_record(record("depth", "mae_t", 1, {"abs_rel": 0.9, "delta1": 0.5}, per_clip=clips(0.42)), res)
    write_record(record("depth", "layerlock_t", 1, {"abs_rel": 0.53, "delta1": 0.38}), res)
    board, warnings = aggregate(load(res)[0])
    assert warnings == [
        "depth/synthetic/layerlock_t/attentive: some seeds have no per-clip values; no interval",
        "depth__synthetic__mae_t__attentive__seed1.json: per-clip weighted mean 0.43 is not its abs_rel 0.9; "
        "no interval"]
    depth = _task(board, "depth")
    for model in ("mae_t", "layerlock_t"):
        assert board.group(depth, model, "attentive").ci is None and board.group(depth, model, "attentive").beats == ()
    assert board.group(depth, "random_t", "attentive").beats == ("blind",)      # the others still compare


# Odd records next to the per-clip ones (a copy of mae_t's seed 0 as seed 7, one field changed): a number
# beyond ±1e100 is no measurement (its square, or a weighted sum, would overflow float64) and the record is
# skipped and named; other odd fields are skipped or ignored. The build never crashes.
ODD = {
    "huge_metric": (("metrics", "abs_rel"), 1e308, "metrics {'abs_rel': 1e+308} are not finite numbers within ±1e+100"),
    "huge_negative_metric": (("metrics", "delta1"), -1e308,
                             "metrics {'delta1': -1e+308} are not finite numbers within ±1e+100"),
    "huge_int_metric": (("metrics", "delta1"), 10 ** 400,
                        f"metrics {{'delta1': {10 ** 400}}} are not finite numbers within ±1e+100"),
    "huge_clip_value": (("per_clip", "values", 3), 1e308,
                        "per_clip values[3] is 1e+308, expected a finite number within ±1e+100"),
    "huge_clip_weight": (("per_clip", "weights", 0), 1e308,
                         "per_clip weights[0] is 1e+308, expected a finite non-negative number within ±1e+100"),
    "huge_train_metric": (("train_metrics", "abs_rel"), -1e308,
                          "train_metrics {'abs_rel': -1e+308} are not finite numbers within ±1e+100"),
    "split_not_a_string": (("split",), ["test"], "field 'split' is not a non-empty string"),
    "huge_collapse_monitor": (("config", "collapse"), {"feat_std": 1e308}, None),  # not a monitor: ignored
}


@pytest.mark.parametrize("case", ODD)
def test_odd_records_are_skipped_by_name_and_never_crash_the_build(tmp_path, case, capsys):
    (*parents, key), value, problem = ODD[case]
    res = write_per_clip(tmp_path / "results")
    odd = {**json.loads((res / "depth__synthetic__mae_t__attentive__seed0.json").read_text()), "seed": 7}
    node = odd
    for parent in parents:
        node = node[parent]
    node[key] = value
    (res / "odd.json").write_text(json.dumps(odd))
    assert lbuild.main(["--results", str(res), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == (f"leaderboard: skipped odd.json: {problem}\n" if problem else "")
    assert (tmp_path / "out" / "plots" / "depth__synthetic.png").is_file()


def test_large_values_within_the_bound_aggregate_without_overflow(tmp_path):
    res = write_per_clip(tmp_path / "results")
    big = 1e100
    write_record(record("depth", "mae_t", 7, {"abs_rel": big, "delta1": -big},
                        per_clip={"values": [big] * 16, "weights": [3.0] * 16}, train_metrics={"abs_rel": big}), res)
    written, board = lbuild.build(res, tmp_path / "out")
    g = board.group(_task(board, "depth"), "mae_t", "attentive")
    assert g.metrics["abs_rel"].mean == pytest.approx(big / 3) and g.metrics["abs_rel"].std == pytest.approx(big / 3 ** 0.5)
    assert all(math.isfinite(x) for x in (*g.ci, g.train_primary.mean, g.train_primary.std, g.metrics["delta1"].std))
    assert written["plots/depth__synthetic.png"].read_bytes()[:4] == b"\x89PNG"


ROOT = Path(__file__).resolve().parent.parent
BOARDS = {"selected": ROOT / "leaderboard", "fixed": ROOT / "leaderboard" / "fixed"}  # name -> board directory


@pytest.mark.parametrize("name", BOARDS)
def test_committed_leaderboard_matches_committed_records(name):
    """The committed tables of both boards (and the README overview, the selected board's) are what
    their committed records build."""
    board = BOARDS[name]
    assert lbuild.check(board / "results", board, with_plots=False) == []
    if name == "selected":
        readme = (ROOT / "README.md").read_text()
        assert lbuild.with_overview(readme, overview_markdown(_committed_board(name))) == readme


@functools.cache
def _committed_board(name: str = "selected"):
    return aggregate(load(BOARDS[name] / "results")[0])[0]


def _ci_better(a, b, higher_is_better: bool) -> bool:
    """a's 95% interval lies entirely on the better side of b's."""
    return a.ci[0] > b.ci[1] if higher_is_better else a.ci[1] < b.ci[0]


TASKS_SEEN = ("depth", "point_tracking", "box_tracking", "camera_pose", "action")
# pixels leaves the static tracker by a paired margin (AJ 0.199 against 0.192) inside overlapping
# intervals: half the points move under 2 px at 64x64, so standing still is a strong answer (README)
PIXELS_NARROW = ("point_tracking",)


@pytest.mark.parametrize("which", BOARDS)
def test_committed_positive_controls_beat_the_references_on_every_task(which):
    """docs/design.md §8: a benchmark whose positive controls do not beat its blind reference cannot
    rank anything. In the committed leaderboard (attentive readout), on every task:
    ``supervised_t``'s 95% interval clears both ``blind``'s and ``random_t``'s, and ``pixels`` is
    significantly better than ``blind`` (paired bootstrap), its interval clear of blind's too but
    on ``PIXELS_NARROW``; a change that blinds the harness fails here once the leaderboard is
    regenerated."""
    board = _committed_board(which)
    tasks = {t.task: t for t in board.tasks}
    for name in TASKS_SEEN:
        task = tasks[name]
        group = {m: board.group(task, m, "attentive") for m in ("supervised_t", "pixels", "blind", "random_t")}
        higher = task.higher[task.primary]
        for control in ("supervised_t", "pixels"):
            assert "blind" in group[control].beats, f"{name}: {control}"
        for reference in ("blind", "random_t"):
            assert _ci_better(group["supervised_t"], group[reference], higher), f"{name}: supervised_t vs {reference}"
        assert name in PIXELS_NARROW or _ci_better(group["pixels"], group["blind"], higher), f"{name}: pixels vs blind"


# where mae_t's interval clears random_t's: at the 4DS rule's layer on depth; at its best held-out
# head on no task (depth: 0.331 [0.316, 0.347] against 0.346 [0.331, 0.362], touching)
MAE_CLEAR_OF_RANDOM = {"selected": (), "fixed": ("depth",)}


@pytest.mark.parametrize("which", BOARDS)
def test_committed_self_supervised_rows_are_where_the_readme_puts_them(which):
    """The README's reading of both boards (docs/reproduction.md, claims b and c):
    ``layerlock_t``'s interval clears ``random_t``'s on all five trained-readout tasks and
    ``mae_t``'s on all but depth (ahead there within the intervals), ``mae_t``'s clears
    ``random_t``'s only on ``MAE_CLEAR_OF_RANDOM``; ``latent_nofreeze_t`` overlaps ``mae_t`` on
    every one. Fails when a regenerated board changes that, so the README is rewritten then."""
    board = _committed_board(which)
    tasks = {t.task: t for t in board.tasks}
    for name in TASKS_SEEN:
        task = tasks[name]
        group = {m: board.group(task, m, "attentive")
                 for m in ("layerlock_t", "mae_t", "latent_nofreeze_t", "random_t")}
        higher = task.higher[task.primary]
        assert _ci_better(group["layerlock_t"], group["random_t"], higher), f"{name}: layerlock_t vs random_t"
        assert _ci_better(group["layerlock_t"], group["mae_t"], higher) == (name != "depth"), f"{name}: vs mae_t"
        mean = {m: g.metrics[task.primary].mean for m, g in group.items()}
        assert (mean["layerlock_t"] > mean["mae_t"]) == higher, f"{name}: layerlock_t behind mae_t"
        assert _ci_better(group["mae_t"], group["random_t"], higher) == (name in MAE_CLEAR_OF_RANDOM[which]), name
        assert not any(_ci_better(group[a], group[b], higher) for a, b in (("mae_t", "latent_nofreeze_t"),
                                                                            ("latent_nofreeze_t", "mae_t"))), name


KEYPOINTS_CLEAR_OF_COPYING = {"selected": {"dinov2_s14_imgfocus"}, "fixed": set()}


@pytest.mark.parametrize("which", BOARDS)
def test_committed_propagation_control_beats_copying_the_first_frame(which):
    """The training-free tasks have their own control: ``supervised_t``, which learned the world's
    correspondences, clears copying the first frame and ``random_t`` on mask propagation. On
    keypoints only DINOv2-S/14 at its held-out layer clears copying at PCK@0.1 (a one-token
    threshold; docs/propagation.md), no row at the fixed probe: the test records that as it stands,
    and fails when it changes, so the README is rewritten then."""
    board = _committed_board(which)
    tasks = {t.task: t for t in board.tasks}
    groups = {name: {m: board.group(tasks[name], m, "propagation") for m in ("supervised_t", "blind", "random_t")}
              for name in ("mask_propagation", "keypoint_propagation")}
    mask, keypoint = groups["mask_propagation"], groups["keypoint_propagation"]
    for reference in ("blind", "random_t"):
        assert _ci_better(mask["supervised_t"], mask[reference], True), f"mask_propagation: supervised_t vs {reference}"
    task = tasks["keypoint_propagation"]
    rows = {m: g for m in board.models if (g := board.group(task, m, "propagation")) is not None}
    clear = {m for m, g in rows.items() if _ci_better(g, keypoint["blind"], True)}
    assert clear == KEYPOINTS_CLEAR_OF_COPYING[which]


def test_records_scored_under_other_task_options_get_their_own_column(tmp_path):
    """depth with align=median is not the same task as depth with align=none: never ranked together."""
    results = tmp_path / "results"
    for model, align, value in (("mae_t", "median", 0.10), ("random_t", "none", 0.50), ("layerlock_t", "none", 0.40)):
        config = {"seed": 0, "task": {"name": "depth", "align": align, "average": "pooled"}}
        write_record(record("depth", model, 0, {"abs_rel": value, "delta1": 0.5}, config=config), results)
    board, warnings = aggregate(load(results)[0])
    assert warnings == []
    assert sorted(t.task for t in board.tasks) == ["depth[align=median]", "depth[align=none]"]
    assert board.task_ranks(_task(board, "depth[align=none]"), "attentive") == {"layerlock_t": 1.0}
    assert board.group(_task(board, "depth[align=median]"), "mae_t", "attentive").metrics["abs_rel"].mean == 0.10


def test_records_of_two_task_versions_are_never_pooled(tmp_path):
    """A task whose metrics changed meaning bumps its version: the old records keep their own column
    and a seed of each version is no duplicate."""
    results = tmp_path / "results"
    write_record(record("depth", "mae_t", 0, {"abs_rel": 0.30, "delta1": 0.5}), results / "old")
    write_record(record("depth", "mae_t", 0, {"abs_rel": 0.10, "delta1": 0.9}, task_version=2), results / "new")
    records, errors = load(results)
    assert errors == [] and len(records) == 2
    board, _ = aggregate(records)
    assert sorted(t.task for t in board.tasks) == ["depth[version=1]", "depth[version=2]"]
    assert board.group(_task(board, "depth[version=2]"), "mae_t", "attentive").metrics["abs_rel"].mean == 0.10


def test_records_that_agree_on_task_options_keep_the_task_name(lb):
    assert sorted(t.task for t in lb.tasks) == ["action", "depth"]


def test_ctrl_c_is_one_line(results, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lbuild, "publish", interrupted)
    assert lbuild.main(["--results", str(results), "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == ("leaderboard: interrupted; every file is written whole or not at all: "
                                               "a rerun finishes the build")
