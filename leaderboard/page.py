"""The leaderboard as one self-contained static HTML page (``index.html``).

The overview comes first, under the title and one sentence; then the task tables, the plots, the
feature pictures (a grid, each under its model and clip), the notes, and last the results their
model owners published (``leaderboard.published``) in a section of its own. Each table sits in a
container that scrolls sideways on its own, so the page never does; a primary cell shows its
interval on a second, smaller line. Inline CSS, plots and pictures embedded as PNG data URIs, and a
small inline script that sorts a table when a header is clicked (first click: best first for
scores, ascending otherwise; again: reverse; missing values always last). Reference
rows are a second, grey ``<tbody>`` that sorts on its own, so they stay below the models. No
external assets. The page records script errors in the ``data-errors`` attribute of ``<html>`` and
sets ``data-ok="1"`` on ``<body>`` once its script has run, so a headless browser can check it.
(Named ``page`` rather than ``html`` so it never shadows the standard library's ``html`` module.)
"""
from __future__ import annotations

import base64
import re
from html import escape

from leaderboard.aggregate import Leaderboard
from leaderboard.tables import (DOWN, HEADLINE, NOTES, PICTURES_NOTE, PICTURES_TITLE, PUBLISHED_NOTE, PUBLISHED_TITLE, UP, Cell,
                                Table, overview_key, overview_tables, pictures, published_tables, summary, task_tables)

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1320px;
       padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin: 1.2em 0 0.3em; font-size: 1.05em; }
p { max-width: 70em; overflow-wrap: anywhere; } p.lead { margin-top: 0; color: #333; }
p.key { color: #444; font-size: 0.92em; } p.notes { color: #444; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.3em 0 1em; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.55em; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f4f4f4; vertical-align: bottom; max-width: 11em; font-weight: 600; }
table.sortable th { cursor: pointer; user-select: none; position: relative; padding-right: 1.3em; }
table.sortable th:hover { background: #e8eef8; }
th[aria-sort=ascending]::after { content: "▲"; position: absolute; right: 0.3em; font-size: 0.7em; }
th[aria-sort=descending]::after { content: "▼"; position: absolute; right: 0.3em; font-size: 0.7em; }
td.num, th.num { text-align: right; } td.text, th.text { text-align: left; }
td.num { white-space: nowrap; }
td .ci { display: block; font-size: 0.8em; color: #666; }
tbody tr:hover { background: #fafafa; }
tbody.references td { color: #666; background: #f7f7f7; }
tbody.references tr:first-child td { border-top: 2px solid #bbb; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.pictures { display: grid; grid-template-columns: repeat(auto-fill, minmax(20em, 1fr)); gap: 0.8em; }
.pictures figure { margin: 0; } .pictures img { display: block; width: 100%; height: auto; }
.pictures figcaption { font-size: 0.92em; overflow-wrap: anywhere; }
nav ul { columns: 2; margin: 0.3em 0; }
section.published { margin-top: 3em; padding: 0.2em 1em 0.5em; background: #f6f8fb; border: 1px solid #d5dde8;
                    border-left: 4px solid #7a8ca8; }
section.published h2 { margin-top: 0.8em; border-bottom-color: #d5dde8; }
table.published { font-size: 0.92em; background: #fff; }
table.published th { background: #e9eef5; max-width: none; }
table.published td.text { max-width: 22em; } table.published td:first-child { white-space: nowrap; }
""".strip()

# a column label's word longer than this may wrap after its underscores: the overview keeps its metric names
# whole, a task table of many metrics (camera_pose) breaks them to fit the window
LONG_WORD = {"overview": 16, "task": 8}

ERROR_HOOK = """
window.addEventListener("error", function (e) {
  var d = document.documentElement;
  d.setAttribute("data-errors", (d.getAttribute("data-errors") || "") + (e.message || "error") + "\\n");
});
""".strip()

SORT_JS = """
(function () {
  "use strict";
  function key(cell, numeric) {
    var v = cell ? cell.getAttribute("data-sort") : null;
    if (v === null || v === "") return null;
    if (!numeric) return v;
    var n = parseFloat(v);
    return isNaN(n) ? null : n;
  }
  function sortBy(th) {
    var table = th.closest("table");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.classList.contains("num");
    var now = th.getAttribute("aria-sort");
    var dir = now === "ascending" ? "descending" : now === "descending" ? "ascending"
            : (th.getAttribute("data-first") || "ascending");
    Array.prototype.forEach.call(table.tBodies, function (tbody) {  // models, then references
      var rows = Array.prototype.slice.call(tbody.rows);
      rows.sort(function (r1, r2) {
        var a = key(r1.cells[col], numeric), b = key(r2.cells[col], numeric);
        if (a === null || b === null) return (a === null) - (b === null);
        var c = a < b ? -1 : a > b ? 1 : 0;
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable thead th"), function (th) {
    th.tabIndex = 0;
    th.title = "click to sort";
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
  document.body.setAttribute("data-ok", "1");
})();
""".strip()


def _sort_attr(value: float | str | None) -> str:
    if value is None:
        return ""
    return escape(repr(value) if isinstance(value, float) else str(value), quote=True)


def inline_markdown(text: str) -> str:
    """Escaped ``text`` with Markdown's **bold** and `code` as HTML (the notes are written in Markdown)."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def cell_html(cell: Cell) -> str:
    """A cell's content: a stat cell's value (bold where best) and marks, its interval on a second line;
    any other cell its text."""
    main = " ".join(part for part in (cell.value, cell.marks) if part) if cell.value else cell.text
    html = f"<strong>{escape(main)}</strong>" if cell.bold else escape(main)
    return html + (f'<span class="ci">{escape(cell.interval)}</span>' if cell.interval else "")


def _rows_html(table: Table, rows: list[list[Cell]]) -> str:
    lines = []
    for row in rows:
        cells = [f'<td class="{"num" if col.numeric else "text"}" data-sort="{_sort_attr(cell.sort)}">'
                 f"{cell_html(cell)}</td>" for col, cell in zip(table.columns, row)]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines)


def header_label(label: str, long_word: int) -> str:
    """An escaped column label that wraps between words, after an underscore inside a word longer than
    ``long_word`` characters, and after the colon of ``task: metric``; its arrow stays on the last word."""
    words = [escape(w).replace("_", "_<wbr>") if len(w) > long_word else escape(w) for w in label.split(" ")]
    text = " ".join(words).replace(": ", ":<br>")
    return text.replace(f" {UP}", f"\u00a0{UP}").replace(f" {DOWN}", f"\u00a0{DOWN}")


def table_html(table: Table) -> str:
    """The table in a container that scrolls sideways on its own; sortable unless it is a published one."""
    head = []
    for c in table.columns:
        first = "descending" if c.higher_is_better else "ascending"
        label = header_label(c.label, LONG_WORD.get(table.kind, 16))
        head.append(f'<th class="{"num" if c.numeric else "text"}" data-first="{first}" scope="col">{label}</th>')
    references = (f'<tbody class="references">\n{_rows_html(table, table.references)}\n</tbody>\n'
                  if table.references else "")
    classes = table.kind if table.kind == "published" else f"sortable {table.kind}"
    return (f'<div class="scroll"><table class="{classes}" id="{escape(table.anchor)}">\n'
            f"<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n{_rows_html(table, table.rows)}\n</tbody>\n"
            f"{references}</table></div>")


def published_html() -> str:
    """The section of published results: its own heading, note, table style, and no sorting."""
    parts = ['<section class="published" id="published">', f"<h2>{escape(PUBLISHED_TITLE)}</h2>",
             f'<p class="notes">{inline_markdown(PUBLISHED_NOTE)}</p>']
    for t in published_tables():
        parts += [f"<h3>{escape(t.title)}</h3>", table_html(t)]
    return "\n".join(parts + ["</section>"])


def data_uri(png: bytes) -> str:
    """A PNG as a data URI, so that the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plots_html(plots: dict[str, bytes]) -> list[str]:
    parts = ['<h2 id="plots">Plots</h2>'] if plots else []
    for name, data in plots.items():
        parts.append(f'<figure><img src="{data_uri(data)}" alt="{escape(name)}"><figcaption>{escape(name)}'
                     "</figcaption></figure>")
    return parts


def pictures_html(lb: Leaderboard, images: dict[str, bytes]) -> list[str]:
    """The feature pictures (``{relative path: PNG}``) as a grid in the board's row order, each captioned
    with its model and clip; nothing without pictures."""
    if not images:
        return []
    parts = [f'<h2 id="pictures">{escape(PICTURES_TITLE)}</h2>',
             f'<p class="notes">{inline_markdown(PICTURES_NOTE)}</p>', '<div class="pictures">']
    for p in pictures(lb, list(images)):
        parts.append(f'<figure><img src="{data_uri(images[p.path])}" alt="{escape(p.model)} on {escape(p.clip)}">'
                     f"<figcaption><strong>{escape(p.model)}</strong> · {escape(p.clip)}</figcaption></figure>")
    return parts + ["</div>"]


def _nav(tasks: list[Table], plots: bool, images: bool) -> list[str]:
    """Links to the task tables and the sections after them."""
    links = [(t.anchor, t.title) for t in tasks] + ([("plots", "Plots")] if plots else [])
    links += [("pictures", PICTURES_TITLE)] if images else []
    links += [("notes", "How to read these tables"), ("published", "Published results (not measured here)")]
    items = [f'<li><a href="#{escape(anchor)}">{escape(label)}</a></li>' for anchor, label in links]
    return ["<nav><ul>", *items, "</ul></nav>"]


def page(lb: Leaderboard, plots: dict[str, bytes], images: dict[str, bytes] | None = None) -> str:
    """The page: title and one sentence, the overview with its key, the task tables, the plots, the feature
    pictures (``images``: {relative path: PNG}), the notes, then the published results."""
    images = images or {}
    overview, tasks = overview_tables(lb), task_tables(lb)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>frozen4d leaderboard</title>", f"<script>{ERROR_HOOK}</script>", f"<style>\n{CSS}\n</style>",
             "</head>", "<body>", "<h1>frozen4d leaderboard</h1>",
             f'<p class="lead">{inline_markdown(summary(lb))}</p>', '<h2 id="overview">Overview</h2>',
             f'<p class="key">{inline_markdown(overview_key(lb))} <a href="#notes">How each number is made</a>.</p>']
    for t in overview:
        parts += [f"<h3>Overview — {escape(t.title)}</h3>", table_html(t)]
    if HEADLINE in plots:
        parts.append(f'<figure class="headline"><img src="{data_uri(plots[HEADLINE])}" alt="every row on every task">'
                     "<figcaption>Every row on every task: the primary metric with its 95% interval; the models in "
                     "colour, the references below the dashed line in grey.</figcaption></figure>")
    rest = {name: data for name, data in plots.items() if name != HEADLINE}
    parts += ['<h2 id="tasks">Tasks</h2>', *_nav(tasks, bool(rest), bool(images))]
    for t in tasks:
        parts += [f"<h3>{escape(t.title)}</h3>", table_html(t)]
    parts += _plots_html(rest) + pictures_html(lb, images)
    parts += ['<h2 id="notes">How to read these tables</h2>',
              f'<p class="notes">{inline_markdown(NOTES)} Click a column header to sort (reference rows sort among '
              "themselves, below the models).</p>", published_html()]
    parts += [f"<script>\n{SORT_JS}\n</script>", "</body>", "</html>", ""]
    return "\n".join(parts)
