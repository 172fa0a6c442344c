"""Report from the two recorded runs: charts, a parseable self-contained HTML page, Markdown."""

from __future__ import annotations

import base64
import html.parser
from pathlib import Path

from inferstack.bench.plots import CHARTS
from inferstack.bench.report import compare_runs, write_report
from inferstack.bench.results import load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.tables = 0
        self.rows: list[str | None] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows.append(dict(attrs).get("class"))
        if tag not in ("img", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def test_report_of_two_runs(tmp_path: Path, run_none: Path, run_ngram: Path) -> None:
    out = tmp_path / "report"
    md = write_report([run_none, run_ngram], out)
    for name in CHARTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    page = _Page()
    page.feed((out / "index.html").read_text())
    page.close()
    assert page.stack == [] and page.tables == 2
    assert len(page.imgs) == len(CHARTS)
    for img in page.imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert page.rows.count("untrusted") == 0  # both recorded runs kept their schedule
    assert (out / "summary.md").read_text() == md
    assert "## no speculation documents" in md and "## ngram documents" in md
    ngram = load_run(run_ngram)
    accept = ngram.stages[0].server.acceptance_rate  # type: ignore[union-attr]
    assert f"{accept:.1%}" in md


def test_untrusted_stage_is_flagged(tmp_path: Path, run_ngram: Path) -> None:
    import json

    path = run_ngram / "inference-perf" / "stage_1_lifecycle_metrics.json"
    raw = json.loads(path.read_text())
    raw["load_summary"]["schedule_delay"]["p99"] = 0.0421
    path.write_text(json.dumps(raw))
    md = write_report([run_ngram], tmp_path / "r")
    assert "| NO |" in md and "1 (schedule delay P99 42.1 ms)" in md
    page = _Page()
    page.feed((tmp_path / "r" / "index.html").read_text())
    assert page.rows.count("untrusted") == 1


def test_compare_prints_per_stage_ratios(run_none: Path, run_ngram: Path) -> None:
    text = compare_runs(run_none, run_ngram)
    a, b = load_run(run_none), load_run(run_ngram)
    lines = [line for line in text.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")]
    assert len(lines) == 2
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert cells[2] == f"{b.stages[1].output_tokens_per_s / a.stages[1].output_tokens_per_s:.2f}x"
    assert cells[3] == f"{b.stages[1].ttft.p50 / a.stages[1].ttft.p50:.2f}x"  # type: ignore[operator]
    assert cells[8].startswith("-/")  # no drafts without speculation
