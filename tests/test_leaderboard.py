"""Leaderboard build: seed aggregation, direction-aware bold and ranks, malformed records, determinism, CLI.

Synthetic records, values chosen so every number below can be checked by hand:

depth (primary abs_rel ↓, also delta1 ↑), attentive readout
  mae_t        abs_rel 0.10 0.12 0.14 -> 0.12 ± 0.02      delta1 0.90 0.80 0.85 -> 0.85 ± 0.05
  layerlock_t  abs_rel 0.15 0.17      -> 0.16 ± 0.0141    delta1 0.95 0.93      -> 0.94 ± 0.0141
  random_t     abs_rel 0.50 0.60 0.70 -> 0.60 ± 0.10      delta1 0.30 ×3        -> 0.30 ± 0
  ranks: mae_t 1, layerlock_t 2, random_t 3
action (primary top1 ↑, also loss ↓), attentive readout
  mae_t        top1 0.55 0.65 -> 0.60   (0.55 + 0.65 != 1.2 in floats: a tie only at rank precision)
  layerlock_t  top1 0.50 0.70 -> 0.60
  random_t     top1 0.10 0.20 -> 0.15
  ranks: mae_t 1.5, layerlock_t 1.5, random_t 3
mean rank: mae_t 1.25, layerlock_t 1.75, random_t 3
depth, linear readout: mae_t, one seed (abs_rel 0.30) -> "(n=1)", std 0, n 1
"""
from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import ResultRecord, write_record
from leaderboard import build as lbuild
from leaderboard.aggregate import aggregate, average_ranks, load
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
           config: dict | None = None) -> ResultRecord:
    primary, directions = {"depth": ("abs_rel", {"abs_rel": False, "delta1": True}),
                           "action": ("top1", {"top1": True, "loss": False})}[task]
    return ResultRecord(task=task, dataset="synthetic", split="test", model=model, checkpoint_sha256="0" * 64,
                        readout=readout, seed=seed, metrics=metrics, directions=directions, primary_metric=primary,
                        higher_is_better=directions[primary], config=config or {"seed": seed},
                        created="2020-01-01T00:00:00+00:00")


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
    assert [r[1].text for r in depth.rows] == ["mae_t", "layerlock_t", "random_t"]   # best primary first
    assert rows["mae_t"][3].text == "0.1200 ± 0.0200"
    assert rows["layerlock_t"][3].text == "0.1600 ± 0.0141"
    # abs_rel is lower-is-better: the smallest mean is bold, not the largest (random_t's 0.60)
    assert [m for m, r in rows.items() if r[3].bold] == ["mae_t"]
    assert [m for m, r in rows.items() if r[4].bold] == ["layerlock_t"]
    assert [r[0].text for r in depth.rows] == ["1", "2", "3"]
    action = tables["action · synthetic · attentive readout"]
    # a tie at rank precision: both bold, both rank 1.5, order by name
    assert [(r[1].text, r[0].text, r[3].bold) for r in action.rows] == [
        ("layerlock_t", "1.5", True), ("mae_t", "1.5", True), ("random_t", "3", False)]
    linear = tables["depth · synthetic · linear readout"]
    assert linear.rows[0][3].text == "0.3000 (n=1)"


def test_mean_rank_with_a_tie(lb):
    assert average_ranks({"a": 2.0, "b": 1.0, "c": 2.0, "d": 0.5}, higher_is_better=True) == {
        "a": 1.5, "c": 1.5, "b": 3.0, "d": 4.0}
    assert average_ranks({"a": 2.0, "b": 1.0, "c": 2.0}, higher_is_better=False) == {"b": 1.0, "a": 2.5, "c": 2.5}
    rows = lb.overview("attentive")
    assert [(r.model, r.mean_rank) for r in rows] == [("mae_t", 1.25), ("layerlock_t", 1.75), ("random_t", 3.0)]
    assert rows[0].ranks == {("action", "synthetic"): 1.5, ("depth", "synthetic"): 1.0}
    (overview_att, overview_lin) = overview_tables(lb)
    assert [c.label for c in overview_att.columns] == ["model", "params", "action: top1 ↑", "depth: abs_rel ↓",
                                                       "mean rank ↓"]
    first = overview_att.rows[0]
    assert [c.text for c in first] == ["mae_t", "3.7M", "0.6000 ± 0.0707", "0.1200 ± 0.0200", "1.25"]
    assert first[-1].bold and not overview_att.rows[1][-1].bold
    # a model missing a task is ranked over the tasks it has, and says so
    assert [c.text for c in overview_lin.rows[0]][-1] == "1.00 (1/2 tasks)"


def test_outputs_markdown_csv_html_plots(built, lb):
    names = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert names == ["index.html", "leaderboard.csv", "leaderboard.md", "plots/action__synthetic.png",
                     "plots/depth__synthetic.png", "plots/params.png"]
    md = (built / "leaderboard.md").read_text()
    assert "| 1 | mae_t | 3 | **0.1200 ± 0.0200** | 0.8500 ± 0.0500 |" in md
    assert "| 3 | random_t | 3 | 0.6000 ± 0.1000 | 0.3000 ± 0.0000 |" in md
    assert "| **mae_t** |" not in md and "(plots/params.png)" in md
    rows = list(csv.DictReader(io.StringIO((built / "leaderboard.csv").read_text())))
    assert list(rows[0]) == ["task", "dataset", "readout", "model", "metric", "mean", "std", "n"]
    assert len(rows) == 2 * 3 * 2 + 2           # (task × model × metric) attentive + mae_t linear depth
    row = next(r for r in rows if (r["task"], r["model"], r["metric"], r["readout"]) ==
               ("depth", "layerlock_t", "abs_rel", "attentive"))
    assert float(row["mean"]) == pytest.approx(0.16) and float(row["std"]) == pytest.approx(0.014142, abs=1e-6)
    assert row["n"] == "2"
    assert [r["n"] for r in rows if r["readout"] == "linear"] == ["1", "1"]
    html = (built / "index.html").read_text()
    assert "<strong>0.1200 ± 0.0200</strong>" in html and "data:image/png;base64," in html
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
                                              "plots/action__synthetic.png", "plots/old__task.png",
                                              "plots/params.png"]
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
    assert "nested/nan_metric.json: metrics ['abs_rel'] are not finite numbers" in err
    assert "no_primary.json: missing fields" in err
    assert len(err.strip().splitlines()) == 3
    # the good records still give exactly the clean leaderboard
    assert (out / "leaderboard.csv").read_bytes() == lbuild.render(results, with_plots=False)[0]["leaderboard.csv"]
    assert set(written) >= {"leaderboard.md", "leaderboard.csv", "index.html"}


def test_duplicate_seed_counted_once(results, tmp_path):
    dup = tmp_path / "results"
    write_all(dup)
    (dup / "copy").mkdir()
    src = next(dup.glob("depth__synthetic__mae_t__attentive__seed0.json"))
    (dup / "copy" / src.name).write_text(src.read_text())
    records, errors = load(dup)
    board, warnings = aggregate(records)
    assert errors == [] and len(warnings) == 1 and "duplicate" in warnings[0]
    assert board.group(_task(board, "depth"), "mae_t", "attentive").metrics["abs_rel"].n == 3


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


def test_cli_without_valid_records_fails_clearly(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "junk.json").write_text("[]")
    proc = subprocess.run([sys.executable, "-m", "leaderboard.build", "--results", str(tmp_path / "results"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
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


def test_committed_leaderboard_matches_committed_records():
    """The committed tables (and the README overview) are what the committed records build."""
    root = Path(__file__).resolve().parent.parent
    results = root / "leaderboard" / "results"
    assert lbuild.check(results, root / "leaderboard", with_plots=False) == []
    lb = aggregate(load(results)[0])[0]
    readme = (root / "README.md").read_text()
    assert lbuild.with_overview(readme, overview_markdown(lb)) == readme
