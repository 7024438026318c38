"""Published results beside ours: every entry says where it comes from and how it was measured, the
pages show them in a section of their own after our tables, and none of them enters our rankings.

The numbers themselves were read from the source files named in each entry (``leaderboard.published``);
these tests check the declarations and where the pages put them, not the sources, which are not here.
"""
from __future__ import annotations

import math
import re

import pytest

from leaderboard.aggregate import aggregate, load
from leaderboard.page import page
from leaderboard.published import COMMITS, PUBLISHED, TAPNET
from leaderboard.tables import PUBLISHED_TITLE, markdown, overview_markdown, overview_tables, published_tables
from tests.test_leaderboard import write_all

NAMES = {p.model for p in PUBLISHED}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The synthetic board of tests/test_leaderboard.py (depth and action; mae_t, layerlock_t, random_t)."""
    records, errors = load(write_all(tmp_path_factory.mktemp("results")))
    assert errors == []
    return aggregate(records)[0]


def test_every_entry_names_its_source_protocol_and_a_finite_value():
    assert len(PUBLISHED) >= 20
    for p in PUBLISHED:
        what = f"{p.model} on {p.dataset}"
        assert p.model and p.architecture and p.dataset and p.metric, what
        assert isinstance(p.value, float) and math.isfinite(p.value) and p.value > 0, what
        assert p.probe and p.clips and p.resolution and p.protocol == f"{p.probe}; {p.clips}; {p.resolution}", what
        assert re.fullmatch(r"[\w.-]+/[\w.-]+ \S+", p.source) and p.source.startswith(p.repo), what
        assert re.fullmatch(r"[0-9a-f]{40}", p.commit), what
        assert p.config == "" or p.config.endswith((".yaml", ".md")), what
        assert re.fullmatch(r"\d+×\d+", p.resolution), what
    keys = [(p.model, p.dataset, p.metric) for p in PUBLISHED]
    assert len(keys) == len(set(keys)), "an entry is declared twice"
    assert set(COMMITS) == {p.repo for p in PUBLISHED}


def test_the_supervised_trackers_are_ceilings_not_frozen_probes():
    """TAP-Vid numbers of google-deepmind/tapnet come from trackers trained for the task."""
    trackers = [p for p in PUBLISHED if p.repo == TAPNET]
    assert trackers and all(p.supervised and "supervised" in p.probe for p in trackers)
    assert not any(p.supervised for p in PUBLISHED if p.repo != TAPNET)
    frozen, supervised = published_tables()
    assert "ceiling" in supervised.title and [r[0].text for r in supervised.rows] == [p.model for p in trackers]
    assert len(frozen.rows) + len(supervised.rows) == len(PUBLISHED)
    assert {t.kind for t in (frozen, supervised)} == {"published"}


def test_markdown_shows_the_published_section_after_our_tables(board):
    md = markdown(board, [])
    heading = f"## {PUBLISHED_TITLE}"
    assert md.count(heading) == 1
    assert md.index("## Overview") < md.index("## Tasks") < md.index("### depth · synthetic · linear readout") \
        < md.index("## How to read these tables") < md.index(heading)
    section = md[md.index(heading):]
    for p in PUBLISHED:
        assert f"| {p.model} | {p.architecture} | {p.dataset} | {p.metric} | {p.value!r} | {p.protocol} |" in section
        assert p.source in section and p.commit[:7] in section
    assert f"**{PUBLISHED[0].value!r}**" not in section        # nothing bold: no best among them


def test_page_shows_the_published_section_after_our_tables(board):
    html = page(board, {})
    start = html.index('<section class="published" id="published">')
    assert html.count('<section class="published"') == 1
    assert html.index('id="overview-attentive"') < html.index('id="task-depth-synthetic-linear"') < start
    section = html[start:html.index("</section>", start)]
    assert f"<h2>{PUBLISHED_TITLE}</h2>" in section
    assert section.count('<table class="published"') == 2 and "sortable" not in section and "<strong>" not in section
    for p in PUBLISHED:
        assert f'data-sort="{p.value!r}">{p.value!r}</td>' in section
    # the sort script only binds sortable tables: the published ones never get click handlers
    assert 'querySelectorAll("table.sortable thead th")' in html


def test_no_published_model_enters_our_overview_or_ranks(board):
    assert not NAMES & set(board.models)
    for table in overview_tables(board):
        assert not NAMES & {row[0].text for row in table.rows + table.references}
    ours_md = markdown(board, []).split(f"## {PUBLISHED_TITLE}")[0]
    ours_html = page(board, {}).split('<section class="published"')[0]
    for name in NAMES:
        assert name not in ours_md and name not in ours_html and name not in overview_markdown(board)


def test_our_tables_are_the_same_whatever_is_published(board, monkeypatch):
    from leaderboard import tables

    heading = f"## {PUBLISHED_TITLE}"
    ours = markdown(board, []).split(heading)[0]
    monkeypatch.setattr(tables, "PUBLISHED", PUBLISHED[:1])
    assert [[c.text for c in r] for t in published_tables() for r in t.rows] == [
        [c.text for c in published_tables(PUBLISHED)[0].rows[0]]]
    assert markdown(board, []).split(heading)[0] == ours
