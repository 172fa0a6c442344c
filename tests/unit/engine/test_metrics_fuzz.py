"""Fuzzing the /metrics reader: random and mutated pages never raise, every malformed line is an
error value with its line number, and on valid random pages prometheus_client agrees with us."""

from __future__ import annotations

import math
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from inferstack.engine.metrics import PickerFigures, UnreadablePage, parse_picker_figures, parse_text

RECORDED = (Path(__file__).resolve().parents[1] / "gateway" / "data" / "vllm-0.32-metrics.txt").read_text()
RECORDED_LINES = RECORDED.split("\n")
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:"
names = st.builds(lambda a, b: a + b, st.sampled_from(_NAME_START),
                  st.text(_NAME_START + "0123456789", max_size=12))
label_names = st.builds(lambda a, b: a + b, st.sampled_from(_NAME_START.replace(":", "")),
                        st.text(_NAME_START.replace(":", "") + "0123456789", max_size=8))
label_values = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
values = st.one_of(st.floats(allow_nan=False, width=64), st.sampled_from([math.inf, -math.inf]),
                   st.integers(-10**6, 10**6).map(float))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    return "+Inf" if v == math.inf else "-Inf" if v == -math.inf else repr(v)


@st.composite
def valid_lines(draw) -> tuple[str, str, dict[str, str], float]:
    name = draw(names)
    # prometheus_client refuses the reserved "__" label names (we read them)
    labels = draw(st.dictionaries(label_names.filter(lambda n: not n.startswith("__")), label_values, max_size=4))
    value = draw(values)
    block = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""
    return f"{name}{block} {_fmt(value)}", name, labels, value


def _check(page, text: str) -> None:
    lines = text.split("\n")
    for e in page.errors:
        assert 1 <= e.line <= len(lines) and e.reason
    for s in page.samples:
        assert 1 <= s.line <= len(lines)
    bad = {e.line for e in page.errors}
    assert not bad & {s.line for s in page.samples}


@FUZZ
@given(st.text(max_size=400))
def test_random_text_never_raises(text: str) -> None:
    page = parse_text(text)
    _check(page, text)
    assert isinstance(parse_picker_figures(text), (PickerFigures, UnreadablePage))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(RECORDED_LINES) - 1), st.integers(0, 200),
                          st.sampled_from(["delete", "insert", "replace", "truncate", "dup"]),
                          st.text(max_size=6)), min_size=1, max_size=8))
def test_mutated_recorded_page_never_raises_and_reports_errors(mutations) -> None:
    lines = list(RECORDED_LINES)
    for index, pos, op, junk in mutations:
        index %= len(lines)
        line = lines[index]
        pos = min(pos, len(line))
        if op == "delete":
            line = line[:pos] + line[pos + 1:]
        elif op == "insert":
            line = line[:pos] + junk + line[pos:]
        elif op == "replace":
            line = line[:pos] + junk + line[pos + len(junk):]
        elif op == "truncate":
            line = line[:pos]
        else:
            lines.insert(index, line)
        lines[index] = line
    text = "\n".join(lines)
    page = parse_text(text)
    _check(page, text)
    # every line is a sample, an error, a comment or blank: nothing vanishes silently
    accounted = {s.line for s in page.samples} | {e.line for e in page.errors}
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            assert number in accounted, (number, line)
    result = parse_picker_figures(text)
    assert isinstance(result, (PickerFigures, UnreadablePage))
    _check_filtered_agrees(text, page)


WANTED = frozenset({"vllm:num_requests_waiting", "vllm:cache_config_info", "process_open_fds", "vllm:x"})


def _check_filtered_agrees(text: str, full) -> None:
    """The ``names`` fast path finds the same samples and the same errors on those lines."""
    page = parse_text(text, WANTED)
    _check(page, text)
    assert page.samples == [s for s in full.samples if s.name in WANTED]
    comment = [e for e in full.errors if e.reason.startswith("# ")]  # comments are not read with names
    assert page.errors == [e for e in full.errors if e not in comment
                           and (e.name in WANTED or (not e.name and "not a metric" in e.reason))]


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(sorted(WANTED)), st.sampled_from(RECORDED_LINES[:40]),
                          st.text(" \t{}=\",#\\\nabx:_019.-+eETYPEHL", max_size=12)), max_size=20))
def test_names_fast_path_agrees_with_the_full_parse(parts) -> None:
    text = "".join(parts)
    _check_filtered_agrees(text, parse_text(text))


@FUZZ
@given(st.lists(valid_lines(), max_size=12))
def test_valid_random_pages_agree_with_prometheus_client(lines) -> None:
    text = "\n".join(line for line, *_ in lines)
    page = parse_text(text)
    assert page.errors == []
    assert [(s.name, s.labels, s.value) for s in page.samples] == [(n, lab, v) for _, n, lab, v in lines]
    oracle = [(s.name, dict(s.labels), float(s.value)) for f in text_string_to_metric_families(text)
              for s in f.samples]
    assert [(s.name, s.labels, s.value) for s in page.samples] == oracle
