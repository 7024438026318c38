"""The leaderboard page in a real headless browser (Debian ``chromium``, installed here only when missing).

The built ``index.html`` gets a test script appended (after the page's own script) that reads the
page state, clicks table headers, and writes what it saw as JSON into the DOM; ``chromium
--headless --dump-dom`` prints the DOM after load. No Python dependency beyond the standard library.
A second page, as wide as the committed board (five tasks with long metric names, nine models,
intervals and marks, and a feature picture of each row on two clips as large as the study's), is
laid out in a 1400x900 window: it must not scroll sideways, must show the overview in that first
screen, must load every picture, and must end with the published results. The tests take a few
seconds each once chromium is there (not marked slow); installing it the first time takes a minute
or two, and they skip with the reason when it cannot be installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest
from PIL import Image

from bench.results import ResultRecord, write_record
from leaderboard.build import build

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0"]

# depth: abs_rel ↓ (primary), delta1 ↑; action: top1 ↑ — per model, per seed. blind is a reference row: its
# best-of-all delta1 and top1 never lift it above the models, whatever the sort.
VALUES = {
    ("depth", "mae_t"): [{"abs_rel": 0.10, "delta1": 0.90}, {"abs_rel": 0.14, "delta1": 0.80}],
    ("depth", "layerlock_t"): [{"abs_rel": 0.15, "delta1": 0.95}, {"abs_rel": 0.17, "delta1": 0.93}],
    ("depth", "vjepa"): [{"abs_rel": 0.50, "delta1": 0.30}, {"abs_rel": 0.70, "delta1": 0.30}],
    ("depth", "blind"): [{"abs_rel": 0.90, "delta1": 0.99}, {"abs_rel": 0.90, "delta1": 0.99}],
    ("action", "mae_t"): [{"top1": 0.20}, {"top1": 0.22}],
    ("action", "layerlock_t"): [{"top1": 0.70}, {"top1": 0.72}],
    ("action", "vjepa"): [{"top1": 0.40}, {"top1": 0.42}],
    ("action", "blind"): [{"top1": 0.99}, {"top1": 0.99}],
}
BLIND = "blind (reference)"
PROBE = """
<script>
(function () {
  function models(id) {
    return Array.prototype.map.call(document.querySelectorAll("#" + id + " tbody tr"), function (tr) {
      return tr.cells[1].textContent; });
  }
  function overviewModels(id) {
    return Array.prototype.map.call(document.querySelectorAll("#" + id + " tbody tr"), function (tr) {
      return tr.cells[0].textContent; });
  }
  function click(id, label) {
    var th = Array.prototype.filter.call(document.querySelectorAll("#" + id + " thead th"), function (h) {
      return h.textContent.indexOf(label) === 0; })[0];
    th.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
  }
  var out = {ok: document.body.getAttribute("data-ok"),
             errors: document.documentElement.getAttribute("data-errors"),
             text: document.body.innerText, task: {}, overview: {}};
  var t = "task-depth-synthetic-attentive";
  out.task.initial = models(t);
  click(t, "model"); out.task.model_asc = models(t);
  click(t, "model"); out.task.model_desc = models(t);
  click(t, "delta1"); out.task.delta1_first = models(t);
  click(t, "abs_rel"); out.task.abs_rel_first = models(t);
  var o = "overview-attentive";
  out.overview.initial = overviewModels(o);
  click(o, "action"); out.overview.action_first = overviewModels(o);
  click(o, "depth"); out.overview.depth_first = overviewModels(o);
  click(o, "mean rank"); out.overview.rank_first = overviewModels(o);
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs apt-get as root): "
                    "apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "chromium"]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # stale package lists: refresh once
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    found = shutil.which("chromium")
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"chromium could not be installed with apt-get (exit {proc.returncode}: {last})")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def dump_dom(chromium: str, page: Path, profile: Path, *flags: str) -> tuple[str, str]:
    proc = subprocess.run([chromium, *FLAGS, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def probe(dom: str) -> dict:
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, f"the probe script did not run; DOM tail: {dom[-1000:]}"
    return json.loads(unescape(match.group(1)))


def test_page_loads_shows_everything_and_sorts(chromium, tmp_path):
    results = tmp_path / "results"
    for (task, model), seeds in VALUES.items():
        primary = {"depth": "abs_rel", "action": "top1"}[task]
        directions = {"abs_rel": False, "delta1": True, "top1": True}
        for seed, metrics in enumerate(seeds):
            write_record(ResultRecord(
                task=task, dataset="synthetic", split="test", model=model, checkpoint_sha256="0" * 64,
                readout="attentive", seed=seed, metrics=metrics,
                directions={k: directions[k] for k in metrics}, primary_metric=primary,
                higher_is_better=directions[primary], schema_version=1), results)  # metrics only, no per-clip values
    out = tmp_path / "out"
    build(results, out)
    html = (out / "index.html").read_text()
    assert "</body>" in html
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))

    dom, log = dump_dom(chromium, page, tmp_path / "profile")
    seen = probe(dom)
    assert seen["ok"] == "1", "the page's script did not finish"
    assert seen["errors"] is None, f"script errors: {seen['errors']}"
    assert "Uncaught" not in log, log[-2000:]
    for name in ("mae_t", "layerlock_t", "vjepa", BLIND, "depth", "action", "abs_rel", "delta1", "top1"):
        assert name in seen["text"]
    # per-task table: initial order best abs_rel first; model ↑ / ↓; a ↑ score sorts best-first on first click;
    # the reference row stays below the models
    assert seen["task"] == {"initial": ["mae_t", "layerlock_t", "vjepa", BLIND],
                            "model_asc": ["layerlock_t", "mae_t", "vjepa", BLIND],
                            "model_desc": ["vjepa", "mae_t", "layerlock_t", BLIND],
                            "delta1_first": ["layerlock_t", "mae_t", "vjepa", BLIND],
                            "abs_rel_first": ["mae_t", "layerlock_t", "vjepa", BLIND]}
    # overview: depth ranks mae 1, layerlock 2, vjepa 3; action ranks layerlock 1, vjepa 2, mae 3
    # -> mean ranks layerlock 1.5, mae 2, vjepa 2.5 (blind is not ranked)
    assert seen["overview"] == {"initial": ["layerlock_t", "mae_t", "vjepa", BLIND],
                                "action_first": ["layerlock_t", "vjepa", "mae_t", BLIND],
                                "depth_first": ["mae_t", "layerlock_t", "vjepa", BLIND],
                                "rank_first": ["layerlock_t", "mae_t", "vjepa", BLIND]}


def test_probe_sees_script_errors(chromium, tmp_path):
    """Negative control: the error hook really reports an error thrown by a page script."""
    from leaderboard.page import ERROR_HOOK

    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><head><script>{ERROR_HOOK}</script></head><body>"
                    "<script>undefinedFunction();</script>"
                    "<script>document.body.appendChild(Object.assign(document.createElement('pre'), {id: 'probe', "
                    "textContent: JSON.stringify({errors: document.documentElement.getAttribute('data-errors')})}));"
                    "</script></body></html>")
    dom, _ = dump_dom(chromium, page, tmp_path / "profile")
    assert "undefinedFunction" in probe(dom)["errors"]


# A board as wide as the committed one: task -> (primary metric, higher is better, scale, other metrics).
# Values are fractions, or degrees (scale 20) whose intervals take the most room, e.g. "[13.771, 16.857]".
WIDE_TASKS = {
    "action": ("top1", True, 1.0, ["top5"]),
    "box_tracking": ("mean_iou", True, 1.0, []),
    "camera_pose": ("rot_err_deg_mean", False, 20.0, ["auc30", "rot_err_deg_median", "trans_dir_err_deg_mean",
                                                      "trans_dir_err_deg_median", "trans_err_mean",
                                                      "trans_err_median"]),
    "depth": ("abs_rel", False, 1.0, ["delta1"]),
    "point_tracking": ("average_jaccard", True, 1.0, []),
}
WIDE_MODELS = ("layerlock_t", "latent_nofreeze_t", "mae_t", "blind", "pixels", "random_t", "supervised_t",
               "dinov2_s14_imgfocus", "random_dinov2_s14_imgfocus")
EXTRA_SEEDS = ("depth", "mae_t")  # the one group with 3 seeds, not the board's 1: its overview cell says (n=3)
WINDOW = 1400
PICTURE_CLIPS = {"carphone_pristine": "carphone_pristine", "world-test-0": "world:test:0"}  # file stem: caption
PICTURE_SIZE = (780, 626)  # a contact sheet of a 64x64 clip
LAYOUT_PROBE = """
<script>
window.addEventListener("load", function () {  // the pictures decoded
  var d = document.documentElement, overview = document.getElementById("overview-attentive");
  var published = document.getElementById("published"), tasks = document.querySelectorAll("table.task");
  var pictures = document.getElementById("pictures"), figures = document.querySelectorAll(".pictures figure");
  var images = document.querySelectorAll(".pictures img"), headline = document.querySelector("figure.headline img");
  var firstTask = document.querySelector("table.task");
  var lastTask = tasks[tasks.length - 1];
  function follows(a, b) { return !!(a && b && (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING)); }
  var before = document.createRange();
  before.setStart(document.body, 0);
  before.setEndBefore(overview);
  var out = {innerWidth: window.innerWidth, scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
             firstTable: document.querySelector("table").id, overviewTop: overview.getBoundingClientRect().top,
             wordsBefore: before.toString().split(/\\s+/).filter(Boolean).length,
             overviewText: overview.innerText, published: !!published,
             publishedAfterOverview: follows(overview, published), publishedAfterTasks: follows(lastTask, published),
             notesAfterTasks: follows(lastTask, document.getElementById("notes")),
             publishedHeading: published ? published.querySelector("h2").textContent : null,
             publishedSortable: published ? published.querySelectorAll("table.sortable, th[tabindex]").length : null,
             publishedRows: published ? published.querySelectorAll("tbody tr").length : 0,
             headlineLoaded: !!(headline && headline.naturalWidth > 0),
             headlineWidth: headline ? headline.getBoundingClientRect().width : 0,
             headlineBeforeTasks: follows(overview, headline) && follows(headline, firstTask),
             pictures: !!pictures, picturesAfterTasks: follows(lastTask, pictures),
             notesAfterPictures: follows(pictures, document.getElementById("notes")), images: images.length,
             imagesLoaded: Array.prototype.filter.call(images, function (i) { return i.naturalWidth > 0; }).length,
             picturesPerLine: Array.prototype.filter.call(figures, function (f) {
               return f.offsetTop === figures[0].offsetTop; }).length,
             captions: Array.prototype.map.call(document.querySelectorAll(".pictures figcaption"), function (c) {
               return c.textContent; })};
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def clip_values(level: float, spread: float, n: int = 16) -> dict[str, list[float]]:
    """Per-clip values level ∓ spread (even / odd clips), weights 1 / 3."""
    return {"values": [level + (spread if k % 2 else -spread) for k in range(n)],
            "weights": [3.0 if k % 2 else 1.0 for k in range(n)]}


def write_wide(results: Path) -> Path:
    """Schema-2 records of every model on every task of ``WIDE_TASKS``, one seed each (``EXTRA_SEEDS``: three)."""
    for task, (primary, higher, scale, others) in WIDE_TASKS.items():
        for i, model in enumerate(WIDE_MODELS):
            for seed in range(3 if (task, model) == EXTRA_SEEDS else 1):
                level = scale * (0.2 + 0.05 * i + 0.01 * seed)
                clips = clip_values(level, 0.1 * level)
                value = sum(v * w for v, w in zip(clips["values"], clips["weights"])) / sum(clips["weights"])
                metrics = {primary: value, **{m: 0.3 + 0.01 * i for m in others}}
                directions = {m: higher if m == primary else "err" not in m for m in metrics}
                write_record(ResultRecord(
                    task=task, dataset="synthetic", split="test", model=model, checkpoint_sha256="0" * 64,
                    readout="attentive", seed=seed, metrics=metrics, directions=directions, primary_metric=primary,
                    higher_is_better=higher, per_clip=clips, schema_version=2), results)
    return results


def write_pictures(out: Path) -> list[str]:
    """A contact-sheet-sized picture of every row with features on each of ``PICTURE_CLIPS``, under
    ``out/features``; their captions."""
    (out / "features").mkdir(parents=True)
    captions = []
    for i, model in enumerate(m for m in WIDE_MODELS if m != "blind"):
        for stem, clip in PICTURE_CLIPS.items():
            Image.new("RGB", PICTURE_SIZE, (20 * i, 120, 200)).save(out / "features" / f"{model}__{stem}.png")
            captions.append(f"{model} · {clip}")
    return captions


def layout(chromium: str, html: str, tmp_path: Path, name: str) -> dict:
    """What ``LAYOUT_PROBE`` sees of ``html`` in a WINDOW x 900 window."""
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>"))
    dom, _ = dump_dom(chromium, page, tmp_path / f"profile-{name}", f"--window-size={WINDOW},900")
    return probe(dom)


def test_a_wide_board_fits_the_window_and_ends_with_the_published_results(chromium, tmp_path):
    from leaderboard.published import PUBLISHED
    from leaderboard.tables import PUBLISHED_TITLE

    out = tmp_path / "out"
    captions = write_pictures(out)
    build(write_wide(tmp_path / "results"), out)
    html = (out / "index.html").read_text()
    seen = layout(chromium, html, tmp_path, "wide")
    assert seen["innerWidth"] == WINDOW, "the window size did not take effect"
    assert seen["scrollWidth"] <= seen["clientWidth"] <= WINDOW, seen        # no sideways scroll of the page
    # the overview comes first, in the first screen, after a title and a sentence (its key is the rest)
    assert seen["firstTable"] == "overview-attentive" and seen["overviewTop"] < 900, seen
    assert seen["wordsBefore"] <= 100, seen["wordsBefore"]
    # the seed count is said once, above the tables: a cell says (n=K) only where K is not the board's 1
    assert "(n=1)" not in seen["overviewText"] and seen["overviewText"].count("(n=3)") == 1
    assert seen["published"] and seen["publishedAfterOverview"] and seen["publishedAfterTasks"], seen
    assert seen["notesAfterTasks"] and seen["publishedHeading"] == PUBLISHED_TITLE
    assert seen["publishedSortable"] == 0 and seen["publishedRows"] == len(PUBLISHED)
    # the headline figure (every row on every task) right under the overview, loaded, within the window
    assert seen["headlineLoaded"] and seen["headlineBeforeTasks"] and 0 < seen["headlineWidth"] <= WINDOW, seen
    # the feature pictures: after the task tables, before the notes, every one loaded, under its model and clip,
    # several to a line with each row's clips side by side
    assert seen["pictures"] and seen["picturesAfterTasks"] and seen["notesAfterPictures"], seen
    assert seen["images"] == seen["imagesLoaded"] == len(captions) and sorted(seen["captions"]) == sorted(captions)
    assert seen["picturesPerLine"] >= 2 and seen["picturesPerLine"] % len(PICTURE_CLIPS) == 0, seen
    # negative controls: without the tables' own scrolling and wrapping the same page is wider than the window;
    # a picture whose data is broken does not load
    unwrapped = html.replace("</head>", "<style>.scroll { overflow: visible; } th, td { white-space: nowrap; }"
                                        "</style></head>")
    head, grid, tail = unwrapped.partition('<div class="pictures">')
    wide = layout(chromium, head + grid + tail.replace("base64,iVBOR", "base64,AAAA", 1), tmp_path, "unwrapped")
    assert wide["innerWidth"] == WINDOW and wide["scrollWidth"] > WINDOW, wide
    assert wide["imagesLoaded"] == len(captions) - 1, wide
