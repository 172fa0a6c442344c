import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferstack.engine.metrics import (
    PickerFigures,
    UnreadablePage,
    page_series,
    parse_figures,
    parse_picker_figures,
    parse_series,
    parse_text,
    series_key,
    series_names,
)

SAMPLE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="m"} 1.795406962807129e+09
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 60.0
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 45.0
"""


def test_parse_figures():
    f = parse_figures(SAMPLE)
    assert (f.running, f.waiting, f.kv_cache_usage) == (3.0, 2.0, 0.25)
    assert f.acceptance_rate == 0.75
    assert f.mean_acceptance_length == 5.5


def test_gpu_cache_usage_fallback_and_no_spec():
    text = "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{engine=\"0\"} 0.5\n"
    f = parse_figures(text)
    assert f.kv_cache_usage == 0.5
    assert f.acceptance_rate is None and f.mean_acceptance_length is None


# ---- the parser ---------------------------------------------------------------------------------

_TESTS = Path(__file__).resolve().parents[2]
RECORDED = [_TESTS / "unit" / "gateway" / "data" / "vllm-0.32-metrics.txt",
            _TESTS / "fixtures" / "bench" / "metrics-none.txt"]


def test_parse_text_reads_the_exposition_format():
    text = "\r\n".join([
        "# HELP m_total A counter.\\nSecond line with a \\\\ backslash.",
        "# TYPE m_total counter",
        "# a plain comment",
        "",
        'm_total{path="/a\\"b\\\\c\\nd",code="200"} 3 1700000000123',
        "m_total   4.5e+00",
        'h_bucket{le="+Inf"} +Inf',
        "g NaN",
        "g2{} -Inf",
        'g3{a="x,y}z",} 1',
        "   ",
    ])
    page = parse_text(text)
    assert page.ok and page.errors == []
    assert page.types == {"m_total": "counter"}
    assert page.helps["m_total"] == "A counter.\nSecond line with a \\ backslash."
    s = page.samples
    assert [x.name for x in s] == ["m_total", "m_total", "h_bucket", "g", "g2", "g3"]
    assert s[0].labels == {"path": '/a"b\\c\nd', "code": "200"} and s[0].value == 3.0
    assert s[0].timestamp == 1700000000.123 and s[0].line == 5
    assert s[1].labels == {} and s[1].value == 4.5 and s[1].timestamp is None
    assert s[2].value == math.inf and math.isnan(s[3].value) and s[4].value == -math.inf
    assert s[5].labels == {"a": "x,y}z"}


@pytest.mark.parametrize("line, reason", [
    ("<html><body>502 Bad Gateway</body></html>", "not a metric sample"),
    ("vllm:x{broken 1.0 x", "malformed"),
    ('vllm:x{a="1"} one', "not a number"),
    ('vllm:x{a="1"} 1_000', "not a number"),
    ('vllm:x{a="1",a="2"} 1', "appears twice"),
    ('vllm:x{a="unterminated} 1', "malformed"),
    ("vllm:x 1 12.5", "timestamp"),
    ("vllm:x", "malformed"),
    ("# TYPE vllm:x colour", "type"),
    ("# HELP 9bad text", "no valid metric"),
])
def test_malformed_lines_are_error_values(line, reason):
    text = f"vllm:ok 1\n{line}\nvllm:ok 2\n"
    page = parse_text(text)
    assert [s.value for s in page.samples] == [1.0, 2.0]  # the good lines around it survive
    assert len(page.errors) == 1 and page.errors[0].line == 2 and reason in page.errors[0].reason
    assert not page.ok


def test_names_filter_reads_only_those_samples():
    text = 'a 1\nb{x="1"} 2\nb_total 3\nnot valid at all\n<html>\nb{x="1" 9\n'
    page = parse_text(text, {"b"})
    assert [(s.name, s.value) for s in page.samples] == [("b", 2.0)]
    # "<html>" has no metric name; "b{x=..." is a broken line of a wanted sample; "not valid" is skipped
    assert [(e.line, e.name) for e in page.errors] == [(5, ""), (6, "b")]


def _prometheus_client_samples(text: str) -> list[tuple[str, dict[str, str], float, float | None]]:
    return [(s.name, dict(s.labels), float(s.value), s.timestamp)
            for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_same_samples_as_prometheus_client_on_recorded_vllm_pages(path: Path):
    text = path.read_text()
    page = parse_text(text)
    assert page.errors == []
    ours = [(s.name, s.labels, s.value, s.timestamp) for s in page.samples]
    oracle = _prometheus_client_samples(text)
    assert len(ours) > 400 and ours == oracle


def _oracle_series(text: str, families) -> dict[str, float]:
    """The previous prometheus_client-based parse_series, kept as the oracle."""
    wanted = set(families)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.name[len(family.name):] not in ("_total", "_bucket", "_sum", "_count", ""):
                continue
            key = series_key(sample.name, dict(sample.labels))
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_same_series_as_prometheus_client_on_recorded_vllm_pages(path: Path):
    from inferstack.bench.sampler import KEPT_METRICS

    text = path.read_text()
    ours = parse_series(text, KEPT_METRICS)
    assert len(ours) > 50 and ours == _oracle_series(text, KEPT_METRICS)
    everything = {s.name for s in parse_text(text).samples}
    assert parse_series(text, everything) == page_series(parse_text(text, series_names(everything)))


def test_series_sum_over_engines():
    text = ('vllm:prompt_tokens_total{engine="0",model_name="m"} 5\n'
            'vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9\n'
            'vllm:prompt_tokens_total{engine="1",model_name="m"} 7\n')
    assert parse_series(text, ["vllm:prompt_tokens"]) == {"vllm:prompt_tokens_total": 12.0}


# ---- the picker's figures -----------------------------------------------------------------------

def test_picker_figures_of_a_recorded_page():
    f = parse_picker_figures(RECORDED[0].read_text())
    assert isinstance(f, PickerFigures)
    assert (f.waiting, f.running, f.kv_usage) == (0.0, 0.0, 0.0)
    assert f.block_size == 128 and f.active_loras == frozenset() and f.max_loras == 0
    assert f.models == {"smollm2-135m-instruct"} and f.errors == ()


def test_picker_figures_sum_engines_and_read_the_latest_lora_info():
    text = "\n".join([
        "# HELP vllm:num_requests_waiting Number of requests waiting.",
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_waiting{engine="1",model_name="m"} 2.0',
        'vllm:num_requests_running{engine="0",model_name="m"} 4.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5',
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters=""} 100.0',
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="c",waiting_lora_adapters="d"} 200.0',
        "some_other_metric{broken 1.0 x",
    ])
    f = parse_picker_figures(text)
    assert isinstance(f, PickerFigures)
    assert (f.waiting, f.running, f.kv_usage) == (5.0, 4.0, 0.5)  # KV: the fullest engine
    assert f.active_loras == {"c"} and f.waiting_loras == {"d"} and f.max_loras == 2  # latest timestamp wins
    assert f.models == {"m", "c", "d"}
    assert f.errors == ()  # a broken line of a metric we do not read is not even looked at


def test_picker_gpu_cache_usage_fallback():
    base = 'vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n'
    f = parse_picker_figures(base + 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n')
    assert isinstance(f, PickerFigures) and f.kv_usage == 0.5
    f = parse_picker_figures(base + 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
                                    'vllm:kv_cache_usage_perc{model_name="m"} 0.1\n')
    assert isinstance(f, PickerFigures) and f.kv_usage == 0.1


@pytest.mark.parametrize("text, reason", [
    ("", "no vllm:num_requests_waiting"),
    ("<!DOCTYPE html>\n<html><body>Not Found</body></html>\n", "2 malformed lines"),
    ("\x00\xff garbage \x1b[31m", "malformed"),
    ("python_gc_objects_collected_total 1\nprocess_open_fds 3\n", "no vllm:num_requests_waiting"),
    ("vllm:num_requests_waiting 1\nvllm:num_requests_running 1\n", "no vllm:kv_cache_usage_perc"),
    ('vllm:num_requests_waiting{engine="0"} 1\nvllm:num_requests_waiting{engine="1" 4\n'
     "vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n", "line 2"),
])
def test_unusable_pages_are_values_with_a_reason(text, reason):
    f = parse_picker_figures(text)
    assert isinstance(f, UnreadablePage) and reason in f.reason, f


def test_stray_malformed_line_is_reported_but_page_usable():
    text = ("vllm:num_requests_waiting 1\nvllm:num_requests_running 2\n<oops>\n"
            "vllm:kv_cache_usage_perc 0.3\n")
    f = parse_picker_figures(text)
    assert isinstance(f, PickerFigures) and (f.waiting, f.running, f.kv_usage) == (1.0, 2.0, 0.3)
    assert [e.line for e in f.errors] == [3]
