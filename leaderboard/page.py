"""The leaderboard as one self-contained static HTML page (``index.html``).

Inline CSS, plots embedded as PNG data URIs, and a small inline script that sorts a table when a
header is clicked (first click: best first for scores, ascending otherwise; again: reverse;
missing values always last). Reference rows are a second, grey ``<tbody>`` that sorts on its own,
so they stay below the models. No external assets. The page records script errors in the
``data-errors`` attribute of ``<html>`` and sets ``data-ok="1"`` on ``<body>`` once its script has run,
so a headless browser can check it. (Named ``page`` rather than ``html`` so it never shadows the
standard library's ``html`` module.)
"""
from __future__ import annotations

import base64
import re
from html import escape

from leaderboard.aggregate import Leaderboard
from leaderboard.tables import NOTES, Cell, Table, overview_tables, task_tables

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5em; }
p.notes { color: #444; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; user-select: none; position: relative; padding-right: 1.4em; }
th:hover { background: #e8eef8; }
th[aria-sort=ascending]::after { content: "▲"; position: absolute; right: 0.3em; font-size: 0.7em; }
th[aria-sort=descending]::after { content: "▼"; position: absolute; right: 0.3em; font-size: 0.7em; }
td.num, th.num { text-align: right; } td.text, th.text { text-align: left; }
tbody tr:hover { background: #fafafa; }
tbody.references td { color: #666; background: #f7f7f7; }
tbody.references tr:first-child td { border-top: 2px solid #bbb; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
nav ul { columns: 2; }
""".strip()

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


def _rows_html(table: Table, rows: list[list[Cell]]) -> str:
    lines = []
    for row in rows:
        cells = []
        for col, cell in zip(table.columns, row):
            text = f"<strong>{escape(cell.text)}</strong>" if cell.bold else escape(cell.text)
            cells.append(f'<td class="{"num" if col.numeric else "text"}" data-sort="{_sort_attr(cell.sort)}">'
                         f"{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines)


def table_html(table: Table) -> str:
    head = []
    for c in table.columns:
        first = "descending" if c.higher_is_better else "ascending"
        head.append(f'<th class="{"num" if c.numeric else "text"}" data-first="{first}" scope="col">'
                    f"{escape(c.label)}</th>")
    references = (f'<tbody class="references">\n{_rows_html(table, table.references)}\n</tbody>\n'
                  if table.references else "")
    return (f'<table class="sortable {table.kind}" id="{escape(table.anchor)}">\n'
            f"<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n{_rows_html(table, table.rows)}\n</tbody>\n"
            f"{references}</table>")


def page(lb: Leaderboard, plots: dict[str, bytes]) -> str:
    overview, tasks = overview_tables(lb), task_tables(lb)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>frozen4d leaderboard</title>", f"<script>{ERROR_HOOK}</script>", f"<style>\n{CSS}\n</style>",
             "</head>", "<body>", "<h1>frozen4d leaderboard</h1>",
             f'<p class="notes">Built by <code>python -m leaderboard.build</code> from {lb.n_records} result records '
             f"({len(lb.groups)} task × model × readout groups). {inline_markdown(NOTES)}"
             " Click a column header to sort (reference rows sort among themselves, below the models).</p>",
             "<nav><ul>"]
    parts += [f'<li><a href="#{escape(t.anchor)}">{escape(("Overview — " if t.kind == "overview" else "") + t.title)}'
              "</a></li>" for t in overview + tasks]
    parts += ["</ul></nav>", "<h2>Overview</h2>"]
    for t in overview:
        parts += [f"<h3>Overview — {escape(t.title)}</h3>", table_html(t)]
    parts.append("<h2>Tasks</h2>")
    for t in tasks:
        parts += [f"<h3>{escape(t.title)}</h3>", table_html(t)]
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, data in plots.items():
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<figure><img src="{uri}" alt="{escape(name)}">'
                         f"<figcaption>{escape(name)}</figcaption></figure>")
    parts += [f"<script>\n{SORT_JS}\n</script>", "</body>", "</html>", ""]
    return "\n".join(parts)
