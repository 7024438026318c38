"""Feature pictures on the leaderboard: ``<out>/features/*.png`` are inputs of the build, embedded in the
page and linked from ``leaderboard.md`` in a section of their own, never reported as drift nor removed;
``python -m leaderboard.demo --pictures`` draws them for the study's rows at the study's clip size."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from bench.results import ResultRecord, write_record
from bench.visualize import GAP, display_scale
from leaderboard import build as lbuild
from leaderboard import demo
from leaderboard.aggregate import aggregate, load
from leaderboard.tables import PICTURES_TITLE, pictures

MODELS = {"mae_t": 0.2, "random_t": 0.5, "blind": 0.9}  # depth abs_rel: mae_t the one ranked model
PICTURES = {"random_t__carphone_pristine.png": (200, 30, 30), "mae_t__world-test-0.png": (30, 30, 200)}


def write_records(results: Path) -> Path:
    """One depth record per model of ``MODELS`` (schema 1: no per-clip values)."""
    for model, abs_rel in MODELS.items():
        write_record(ResultRecord(task="depth", dataset="synthetic", split="test", model=model,
                                  checkpoint_sha256="0" * 64, readout="attentive", seed=0,
                                  metrics={"abs_rel": abs_rel}, directions={"abs_rel": False},
                                  primary_metric="abs_rel", higher_is_better=False, schema_version=1), results)
    return results


def tiny_png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def board(tmp_path) -> tuple[Path, Path]:
    """(results, out) with the records written and no build yet."""
    return write_records(tmp_path / "results"), tmp_path / "out"


def add_pictures(out: Path) -> dict[str, bytes]:
    (out / "features").mkdir(parents=True)
    pngs = {name: tiny_png(colour) for name, colour in PICTURES.items()}
    for name, data in pngs.items():
        (out / "features" / name).write_bytes(data)
    return pngs


def test_pictures_get_a_section_after_the_tables_and_never_drift(board, capsys):
    results, out = board
    pngs = add_pictures(out)
    lbuild.build(results, out)
    html, md = (out / "index.html").read_text(), (out / "leaderboard.md").read_text()
    for name, data in pngs.items():
        assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in html  # embedded: self-contained
        assert f"](features/{name})" in md and (out / "features" / name).read_bytes() == data  # linked, untouched
    assert "<strong>mae_t</strong> · world:test:0" in html and "<strong>random_t</strong> · carphone_pristine" in html
    assert "| mae_t | — | ![mae_t on world:test:0](features/mae_t__world-test-0.png) |" in md
    # after the overview and the task tables, before the notes and the published results; the ranked model first
    order = [html.index(s) for s in ('id="overview-attentive"', 'id="task-depth-', 'id="pictures"',
                                     'alt="mae_t on world:test:0"', 'alt="random_t on carphone_pristine"',
                                     'id="notes"', 'id="published"')]
    assert order == sorted(order) and '<a href="#pictures">' in html
    assert md.index("## Tasks") < md.index(f"## {PICTURES_TITLE}") < md.index("## How to read these tables")
    # inputs, not outputs: no drift, nothing to write or remove, and a second build is byte-identical
    capsys.readouterr()
    assert lbuild.main(["--results", str(results), "--out", str(out), "--check"]) == 0
    assert "is up to date" in capsys.readouterr().out
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    lbuild.build(results, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # a picture that changes is drift of the page that embeds it
    (out / "features" / "mae_t__world-test-0.png").write_bytes(tiny_png((0, 0, 0)))
    assert lbuild.check(results, out) == ["index.html"]


def test_no_pictures_no_section(board):
    results, out = board
    lbuild.build(results, out)
    html, md = (out / "index.html").read_text(), (out / "leaderboard.md").read_text()
    assert PICTURES_TITLE not in html and 'id="pictures"' not in html and PICTURES_TITLE not in md
    assert not (out / "features").exists()


def test_pictures_follow_the_overview_rows_and_name_their_clips(board):
    results, _ = board
    lb = aggregate(load(results)[0])[0]
    paths = ["features/zz_other__world-test-0.png", "features/random_t__world-test-0.png",
             "features/random_t__carphone_pristine.png", "features/mae_t__world-test-0.png"]
    assert [(p.model, p.clip) for p in pictures(lb, paths)] == [
        ("mae_t", "world:test:0"), ("random_t", "carphone_pristine"), ("random_t", "world:test:0"),
        ("zz_other", "world:test:0")]


def test_demo_pictures_draws_the_rows_that_build_and_rebuilds_the_board(tmp_path, monkeypatch, capsys):
    """``--fast --pictures``: a contact sheet per row with features and clip at FAST's clip size; a row without
    its checkpoint is one stderr line; ``blind`` has none; the rebuilt board shows them."""
    monkeypatch.chdir(tmp_path)
    write_records(Path(demo.FAST["results"]))
    assert demo.main(["--fast", "--pictures", "--models", "pixels", "mae_t", "blind"]) == 0
    skipped = [line for line in capsys.readouterr().err.splitlines() if "mae_t" in line]
    assert len(skipped) == 1 and skipped[0].startswith("demo: no feature pictures of mae_t"), skipped
    out = Path(demo.FAST["out"])
    clips = ["carphone_pristine" if clip.endswith(".mp4") else "world-test-0" for clip in demo.picture_clips()]
    assert sorted(p.name for p in (out / "features").iterdir()) == sorted(f"pixels__{c}.png" for c in clips)
    frames, size = 4, 32  # FAST's clips, each frame enlarged on the sheet
    with Image.open(out / "features" / f"pixels__{clips[-1]}.png") as sheet:
        assert sheet.width == frames * (size * display_scale(size, size) + GAP) - GAP
    assert "<strong>pixels</strong> · world:test:0" in (out / "index.html").read_text()
    assert lbuild.check(demo.FAST["results"], out) == []
