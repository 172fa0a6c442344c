"""The one reader of vLLM's Prometheus ``/metrics`` text: for the endpoint picker, ``inferstack
status`` and the benchmark sampler.

``parse_text`` is a tolerant parser of the Prometheus text exposition format (version 0.0.4):
samples ``name{label="value",...} value [timestamp]`` with escaped label values (``\\\\``, ``\\"``,
``\\n``), ``# HELP`` / ``# TYPE`` lines, other comments, blank lines, ``+Inf`` / ``-Inf`` / ``NaN``
values and millisecond timestamps. Three readers sit on it:

- ``parse_series(text, families)``: the series of chosen families as ``{series_key: value}``,
  summed over engines (what the benchmark sampler records);
- ``parse_figures(text)``: what ``inferstack status`` shows (requests running/waiting, KV-cache
  usage, speculative-decoding counters);
- ``parse_picker_figures(text)``: what the endpoint picker needs (queue, running, KV usage, LoRA
  adapters, block size, served model names), or an ``UnreadablePage`` saying why the page is no use.

Invariants: no function here raises on bad input text; a malformed line becomes a ``ParseError``
value (1-based line number, reason) in ``MetricsPage.errors`` and the line is skipped. With a
``names`` filter, only the lines of those sample names are found (one regular-expression search,
in C) and checked; lines of other metrics are not looked at, and a line that does not even start
with a metric name is still an error. That keeps the picker's scrape at ~0.1 ms a page.

Why not prometheus_client's parser: it walks quoted text character by character in Python
(~8 ms for a 60 KB vLLM page) and raises on the first bad line. ``benchmarks/metrics_parse.py``
prints the same-run ratio; the unit tests check that both parsers read the same samples from
recorded vLLM pages and from random valid pages.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import httpx

from inferstack.wire import VllmMetric

__all__ = [
    "MetricsPage",
    "ParseError",
    "PickerFigures",
    "ReplicaFigures",
    "Sample",
    "UnreadablePage",
    "fetch_figures",
    "page_series",
    "parse_figures",
    "parse_picker_figures",
    "parse_series",
    "parse_text",
    "series_key",
    "series_names",
]


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None  # seconds (the text format carries milliseconds); None when absent
    line: int  # 1-based line number in the page


class ParseError(NamedTuple):
    line: int  # 1-based line number in the page
    reason: str
    name: str = ""  # the metric name the line starts with, "" when it does not start with one


@dataclass(slots=True)
class MetricsPage:
    samples: list[Sample] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)  # from "# TYPE name type"
    helps: dict[str, str] = field(default_factory=dict)  # from "# HELP name text"

    @property
    def ok(self) -> bool:
        return not self.errors


# One full-line pattern per sample; label pairs are read out of the matched block afterwards.
# Written so that no two adjacent parts can match the same characters: a long run of spaces or
# quotes in a hostile page costs linear time, not quadratic.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # "...", with backslash escapes (unrolled: fast in re)
_PAIR = rf"[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*{_QUOTED}"
_SAMPLE_RE = re.compile(
    rf"({_NAME})(?:[ \t]*\{{[ \t]*(?:((?:{_PAIR})(?:[ \t]*,[ \t]*{_PAIR})*)[ \t]*(?:,[ \t]*)?)?\}}[ \t]*|[ \t]+)"
    r"(\S+)(?:[ \t]+(\S+))?"
)
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\]*(?:\\.[^"\\]*)*)"')
_NAME_RE = re.compile(_NAME)
_TIMESTAMP_RE = re.compile(r"[-+]?[0-9]{1,19}")  # int64 milliseconds
_ESCAPE_RE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_ERROR_TEXT_CHARS = 80


def _unescape(value: str, escapes: dict[str, str] = _ESCAPES) -> str:
    # As prometheus_client reads them; an unknown escape keeps its backslash.
    return _ESCAPE_RE.sub(lambda m: escapes.get(m.group(1), m.group(0)), value)


def _snippet(line: str) -> str:
    return repr(line if len(line) <= _ERROR_TEXT_CHARS else line[:_ERROR_TEXT_CHARS] + "...")


def _comment(line: str, number: int, page: MetricsPage) -> None:
    parts = line[1:].split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return  # a plain comment
    keyword, rest = parts[0], parts[1:]
    name = rest[0]
    if not _NAME_RE.fullmatch(name):
        page.errors.append(ParseError(number, f"# {keyword} names no valid metric: {_snippet(line)}"))
    elif keyword == "HELP":
        text = rest[1] if len(rest) > 1 else ""
        page.helps[name] = _unescape(text, _HELP_ESCAPES) if "\\" in text else text
    else:
        typ = rest[1].strip() if len(rest) > 1 else ""
        if typ not in _TYPES:
            page.errors.append(ParseError(number, f"# TYPE {name} has type {typ!r}; must be one of "
                                                  f"{sorted(_TYPES)}", name))
        else:
            page.types[name] = typ


def _value(text: str) -> float | None:
    if "_" in text:  # float() would take "1_000"; the exposition format does not
        return None
    try:
        return float(text)
    except ValueError:
        return None


class _LineReader:
    """Reads sample lines into one page; label blocks seen before are not parsed again."""

    def __init__(self, page: MetricsPage) -> None:
        self.page = page
        self._pairs: dict[str, list[tuple[str, str]] | str] = {}  # label block -> pairs, or a reason

    def sample(self, line: str, number: int) -> None:
        """One stripped, non-empty, non-comment line."""
        m = _SAMPLE_RE.fullmatch(line)
        errors = self.page.errors
        if m is None:
            head = _NAME_RE.match(line)
            if head is None:
                errors.append(ParseError(number, f"not a metric sample: {_snippet(line)}"))
            else:
                errors.append(ParseError(number, f"malformed sample line: {_snippet(line)}", head.group()))
            return
        name, block, value_s, stamp_s = m.groups()
        value = _value(value_s)
        if value is None:
            errors.append(ParseError(number, f"{name}: value {_snippet(value_s)} is not a number", name))
            return
        timestamp = None
        if stamp_s is not None:
            if not _TIMESTAMP_RE.fullmatch(stamp_s):
                errors.append(ParseError(number, f"{name}: timestamp {_snippet(stamp_s)} is not integer "
                                                 "milliseconds", name))
                return
            timestamp = int(stamp_s) / 1000
        if not block:
            self.page.samples.append(Sample(name, {}, value, timestamp, number))
            return
        pairs = self._pairs.get(block)
        if pairs is None:
            found = _PAIR_RE.findall(block)
            if len({k for k, _ in found}) != len(found):
                pairs = f"{name}: a label name appears twice"
            else:
                pairs = [(k, _unescape(v) if "\\" in v else v) for k, v in found]
            self._pairs[block] = pairs
        if isinstance(pairs, str):
            errors.append(ParseError(number, pairs, name))
            return
        self.page.samples.append(Sample(name, dict(pairs), value, timestamp, number))


# Line searches run on "\n" + text and start with "\n" rather than "^": re then jumps from one
# newline to the next (a literal prefix) instead of trying every position, ten times faster.
# A line whose first non-blank character can start neither a metric name nor a comment:
_NAMELESS_RE = re.compile(r"\n[^\S\n]*[^\s#a-zA-Z_:][^\n]*")


@functools.lru_cache(maxsize=32)
def _lines_of(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"\n[^\S\n]*(?:{alternatives})(?![a-zA-Z0-9_:])[^\n]*")


def parse_text(text: str, names: Collection[str] | None = None) -> MetricsPage:
    """Parse a Prometheus text page; never raises on bad text.

    With ``names``, keep only the samples of those exact sample names (e.g.
    ``vllm:prompt_tokens_total``): the page is searched for their lines (in C, by one regular
    expression), only those lines are parsed and checked, comments are not read (``types`` and
    ``helps`` stay empty), and lines that do not even start with a metric name are still errors.
    """
    page = MetricsPage()
    reader = _LineReader(page)
    if names is not None:
        if not names:
            return page
        padded = "\n" + text  # a match starts at the "\n" before its line: at the line's offset in text
        found: list[tuple[int, str, bool]] = []  # (offset, line, is a wanted sample)
        found.extend((m.start(), m.group(), True) for m in _lines_of(frozenset(names)).finditer(padded))
        found.extend((m.start(), m.group(), False) for m in _NAMELESS_RE.finditer(padded))
        found.sort()
        number, at = 1, 0
        for offset, line, wanted in found:
            number += text.count("\n", at, offset)
            at = offset
            line = line.strip()
            if wanted:
                reader.sample(line, number)
            elif line:
                page.errors.append(ParseError(number, f"not a metric sample: {_snippet(line)}"))
        return page
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            _comment(line, number, page)
        else:
            reader.sample(line, number)
    return page


# ---- series for the benchmark sampler --------------------------------------------------------

# Sample suffixes worth keeping: counter totals, gauge values, histogram buckets/sum/count
# (never the ``_created`` timestamps).
_KEPT_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
_DROPPED_LABELS = frozenset({"engine", "model_name"})


def series_key(name: str, labels: dict[str, str]) -> str:
    kept = {k: v for k, v in labels.items() if k not in _DROPPED_LABELS}
    if not kept:
        return name
    return name + "{" + ",".join(f'{k}="{kept[k]}"' for k in sorted(kept)) + "}"


@functools.lru_cache(maxsize=32)
def _series_names(families: frozenset[str]) -> frozenset[str]:
    return frozenset(f + s for f in families for s in _KEPT_SUFFIXES)


def series_names(families: Iterable[str]) -> frozenset[str]:
    """The sample names of metric families (counters named without ``_total``; histograms as
    family names): the family itself, ``_total``, ``_bucket``, ``_sum`` and ``_count``."""
    return _series_names(frozenset(families))


def page_series(page: MetricsPage) -> dict[str, float]:
    """The page's samples as ``{series_key: value}``, summed over engines and models."""
    out: dict[str, float] = {}
    for s in page.samples:
        key = series_key(s.name, s.labels) if s.labels else s.name
        out[key] = out.get(key, 0.0) + s.value
    return out


def parse_series(text: str, families: Iterable[str]) -> dict[str, float]:
    """The series of the given families as ``{series_key: value}``, summed over engines;
    malformed lines are skipped (use ``parse_text`` + ``page_series`` to see them)."""
    return page_series(parse_text(text, series_names(families)))


# ---- figures for ``inferstack status`` -------------------------------------------------------

@dataclass(frozen=True)
class ReplicaFigures:
    running: float
    waiting: float
    kv_cache_usage: float  # 0..1
    spec_drafts: float
    spec_draft_tokens: float
    spec_accepted_tokens: float
    generation_tokens: float = 0.0  # tokens generated since the replica started

    @property
    def acceptance_rate(self) -> float | None:
        if self.spec_draft_tokens <= 0:
            return None
        return self.spec_accepted_tokens / self.spec_draft_tokens

    @property
    def mean_acceptance_length(self) -> float | None:
        if self.spec_drafts <= 0:
            return None
        return 1 + self.spec_accepted_tokens / self.spec_drafts

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = dict(asdict(self))
        out["acceptance_rate"] = self.acceptance_rate
        out["mean_acceptance_length"] = self.mean_acceptance_length
        return out


_FIGURE_FAMILIES = frozenset({
    VllmMetric.RUNNING.value,
    VllmMetric.WAITING.value,
    VllmMetric.KV_CACHE_USAGE.value,
    VllmMetric.GPU_CACHE_USAGE.value,
    VllmMetric.SPEC_DRAFTS.value,
    VllmMetric.SPEC_DRAFT_TOKENS.value,
    VllmMetric.SPEC_ACCEPTED_TOKENS.value,
    VllmMetric.GENERATION_TOKENS.value,
})


def _kv_usage(page: MetricsPage) -> float | None:
    """KV-cache usage: the fullest engine's; vLLM 0.32's name, else the older gpu_cache_usage_perc."""
    kv = [s.value for s in page.samples if s.name == VllmMetric.KV_CACHE_USAGE]
    if not kv:
        kv = [s.value for s in page.samples if s.name == VllmMetric.GPU_CACHE_USAGE]
    return max(kv) if kv else None


def _figures(page: MetricsPage) -> ReplicaFigures:
    s = page_series(page)
    kv = _kv_usage(page)
    return ReplicaFigures(
        running=s.get(VllmMetric.RUNNING, 0.0),
        waiting=s.get(VllmMetric.WAITING, 0.0),
        kv_cache_usage=0.0 if kv is None else kv,
        spec_drafts=s.get(VllmMetric.SPEC_DRAFTS.total, 0.0),
        spec_draft_tokens=s.get(VllmMetric.SPEC_DRAFT_TOKENS.total, 0.0),
        spec_accepted_tokens=s.get(VllmMetric.SPEC_ACCEPTED_TOKENS.total, 0.0),
        generation_tokens=s.get(VllmMetric.GENERATION_TOKENS.total, 0.0),
    )


def parse_figures(text: str) -> ReplicaFigures:
    """Status figures of a page; counts summed over engines, KV usage of the fullest engine."""
    return _figures(parse_text(text, series_names(_FIGURE_FAMILIES)))


def fetch_figures(url: str, timeout_s: float = 2.0) -> ReplicaFigures | None:
    """Figures from ``url``/metrics, or None when the replica does not answer or its page has
    no request-queue series (not a vLLM page)."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    page = parse_text(response.text, series_names(_FIGURE_FAMILIES))
    if not any(s.name == VllmMetric.RUNNING for s in page.samples):
        return None
    return _figures(page)


# ---- figures for the endpoint picker ---------------------------------------------------------

_WAITING = VllmMetric.WAITING.value
_RUNNING = VllmMetric.RUNNING.value
_KV = VllmMetric.KV_CACHE_USAGE.value
_GPU_KV = VllmMetric.GPU_CACHE_USAGE.value
_LORA = VllmMetric.LORA_REQUESTS_INFO.value
_CACHE = VllmMetric.CACHE_CONFIG_INFO.value
_PICKER_NAMES = frozenset({_WAITING, _RUNNING, _KV, _GPU_KV, _LORA, _CACHE})


@dataclass(frozen=True, slots=True)
class PickerFigures:
    """What the picker reads from one page. ``waiting``/``running`` are summed over engines,
    ``kv_usage`` is the fullest engine's (0..1); the LoRA fields come from the latest
    ``lora_requests_info`` series (its value is a timestamp); ``models`` are the served names
    (``model_name`` labels and the adapters in use). ``errors``: malformed lines of other metrics,
    skipped (the page is still usable)."""

    waiting: float
    running: float
    kv_usage: float
    active_loras: frozenset[str] = frozenset()
    waiting_loras: frozenset[str] = frozenset()
    max_loras: int = 0
    block_size: int = 0
    models: frozenset[str] = frozenset()
    errors: tuple[ParseError, ...] = ()


@dataclass(frozen=True, slots=True)
class UnreadablePage:
    """A page the picker cannot use (not Prometheus text, or without the series it needs, or with
    a malformed line of such a series): the endpoint's metrics must count as unknown."""

    reason: str
    errors: tuple[ParseError, ...] = ()


def _int_label(labels: dict[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "0") or 0)
    except ValueError:
        return 0


def _adapters(labels: dict[str, str], key: str) -> frozenset[str]:
    return frozenset(a for a in labels.get(key, "").split(",") if a)


def parse_picker_figures(text: str) -> PickerFigures | UnreadablePage:
    """The picker's figures from a vLLM page, or ``UnreadablePage`` with the reason."""
    page = parse_text(text, _PICKER_NAMES)
    errors = tuple(page.errors)
    bad = [e for e in errors if e.name in _PICKER_NAMES]
    if bad:
        return UnreadablePage(f"line {bad[0].line}: {bad[0].reason}", errors)
    waiting = running = 0.0
    seen: set[str] = set()
    kv: float | None = None
    gpu_kv: float | None = None
    lora_latest: Sample | None = None
    block_size = 0
    models: set[str] = set()
    for s in page.samples:
        name = s.name
        seen.add(name)
        model = s.labels.get("model_name")
        if model:
            models.add(model)
        if name == _WAITING:
            waiting += s.value
        elif name == _RUNNING:
            running += s.value
        elif name == _KV:
            kv = s.value if kv is None else max(kv, s.value)
        elif name == _GPU_KV:
            gpu_kv = s.value if gpu_kv is None else max(gpu_kv, s.value)
        elif name == _LORA:
            if lora_latest is None or s.value >= lora_latest.value:
                lora_latest = s
        elif name == _CACHE:
            block_size = _int_label(s.labels, "block_size")
    missing = [n for n in (_WAITING, _RUNNING) if n not in seen]
    if kv is None and gpu_kv is None:
        missing.append(_KV)
    if missing:
        where = f"; {len(errors)} malformed lines, first: line {errors[0].line}: {errors[0].reason}" if errors else ""
        return UnreadablePage(f"no {' / '.join(missing)} series{where}", errors)
    active: frozenset[str] = frozenset()
    waiting_l: frozenset[str] = frozenset()
    max_loras = 0
    if lora_latest is not None:
        active = _adapters(lora_latest.labels, "running_lora_adapters")
        waiting_l = _adapters(lora_latest.labels, "waiting_lora_adapters")
        max_loras = _int_label(lora_latest.labels, "max_lora")
    return PickerFigures(
        waiting=waiting, running=running, kv_usage=kv if kv is not None else gpu_kv or 0.0,
        active_loras=active, waiting_loras=waiting_l, max_loras=max_loras, block_size=block_size,
        models=frozenset(models | active | waiting_l), errors=errors,
    )
