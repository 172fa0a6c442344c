"""/metrics parse time: our reader (``inferstack.engine.metrics``) vs prometheus_client's parser.

Why we parse vLLM pages ourselves: the EPP scrapes every endpoint every ~75 ms on its event loop,
so parse time is picker latency. Same run, same pages (recorded vLLM 0.32 scrapes), interleaved
rounds; per page it prints the median time per parse of:
- ``prometheus_client``: ``list(text_string_to_metric_families(text))`` (the full page);
- ``ours (full page)``: ``parse_text(text)`` (every sample, every line checked);
- ``ours (picker)``: ``parse_picker_figures(text)`` (what the scraper runs: only the picker's series);
- ``ours (status)``: ``parse_figures(text)``;
and each as a ratio of prometheus_client's time (> 1: ours is faster). A figure, not a pass/fail.

    .venv/bin/python benchmarks/metrics_parse.py [--rounds 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from inferstack.engine.metrics import parse_figures, parse_picker_figures, parse_text

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "tests" / "unit" / "gateway" / "data" / "vllm-0.32-metrics.txt",
         ROOT / "tests" / "fixtures" / "bench" / "metrics-none.txt"]


def _per_call_s(fn: Callable[[], object], min_s: float = 0.05) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed / n


def measure(text: str, rounds: int) -> dict[str, float]:
    variants: dict[str, Callable[[], object]] = {
        "prometheus_client": lambda: list(text_string_to_metric_families(text)),
        "ours (full page)": lambda: parse_text(text),
        "ours (picker)": lambda: parse_picker_figures(text),
        "ours (status)": lambda: parse_figures(text),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):  # interleaved, so machine noise hits every variant alike
        for name, fn in variants.items():
            times[name].append(_per_call_s(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    report = {}
    for page in PAGES:
        text = page.read_text()
        samples = len(parse_text(text).samples)
        med = measure(text, args.rounds)
        base = med["prometheus_client"]
        print(f"{page.relative_to(ROOT)}  ({len(text)} bytes, {samples} samples)")
        print(f"  {'parser':20} {'ms/page':>9} {'vs prometheus_client':>21}")
        for name, t in med.items():
            print(f"  {name:20} {t * 1e3:9.3f} {base / t:20.1f}x")
        report[str(page.relative_to(ROOT))] = {"ms_per_page": {k: v * 1e3 for k, v in med.items()},
                                               "speedup": {k: base / v for k, v in med.items()}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
