"""Benchmarking: inference-perf runs, per-stage vLLM server metrics, reports and comparisons.

Modules: ``settings`` (what a run asks for), ``datasets`` + ``ipconfig`` (inference-perf's
config), ``target`` (pre-flight checks), ``runner`` (the run), ``sampler`` + ``attribution``
(server metrics per stage), ``progress`` (stage windows, live lines), ``manifest`` (run.json),
``results`` (a run read back), ``plots`` + ``report`` (charts, HTML, Markdown, compare),
``interpreter`` (the benchmark venv), ``cli`` (``inferstack bench`` / ``inferstack report``).
"""

from inferstack.bench.attribution import StageServerMetrics, attribute
from inferstack.bench.interpreter import bench_python
from inferstack.bench.manifest import RunManifest, load_manifest
from inferstack.bench.results import RunResult, StageResult, load_run
from inferstack.bench.settings import BenchSettings

__all__ = [
    "BenchSettings",
    "RunManifest",
    "RunResult",
    "StageResult",
    "StageServerMetrics",
    "attribute",
    "bench_python",
    "load_manifest",
    "load_run",
]
