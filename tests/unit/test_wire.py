"""The wire vocabulary is defined once: no vLLM metric name, GIE header or batch status list is
spelled out as a literal elsewhere in the package (a rename upstream must be one edit)."""

import re
from pathlib import Path

import inferstack
from inferstack.wire import BATCH_ACTIVE_STATUSES, BATCH_TERMINAL_STATUSES, BatchStatus, VllmMetric

SRC = Path(inferstack.__file__).parent
LITERALS = [
    (re.compile(r"""["']vllm:[a-z_]+"""), "a vLLM metric name: use inferstack.wire.VllmMetric"),
    (re.compile(r"""["']x-gateway-[a-z-]+["']"""), "a GIE header: use inferstack.wire's *_HEADER"),
    (re.compile(r"""["']completed["'],\s*["']failed["'],\s*["']expired["']"""),
     "a batch status list: use inferstack.wire"),
]


def test_no_wire_literal_outside_wire_py():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "wire.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for pattern, what in LITERALS:
                if pattern.search(line):
                    found.append(f"{path.relative_to(SRC)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_counter_samples_and_statuses():
    assert VllmMetric.GENERATION_TOKENS.total == "vllm:generation_tokens_total"
    assert VllmMetric.WAITING == "vllm:num_requests_waiting"  # a str where a str is expected
    assert set(BATCH_ACTIVE_STATUSES) | set(BATCH_TERMINAL_STATUSES) == set(BatchStatus)
    assert not set(BATCH_ACTIVE_STATUSES) & set(BATCH_TERMINAL_STATUSES)
