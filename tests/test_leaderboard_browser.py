"""The leaderboard page in a real headless browser (Debian ``chromium``, installed here only when missing).

The built ``index.html`` gets a test script appended (after the page's own script) that reads the
page state, clicks table headers, and writes what it saw as JSON into the DOM; ``chromium
--headless --dump-dom`` prints the DOM after load. No Python dependency beyond the standard library.
Both tests take a few seconds once chromium is there (not marked slow); installing it the first
time takes a minute or two, and they skip with the reason when it cannot be installed.
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


def dump_dom(chromium: str, page: Path, profile: Path) -> tuple[str, str]:
    proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
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
