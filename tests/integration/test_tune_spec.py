"""``inferstack tune-spec`` end to end on a tiny budget (real vLLM-CPU replicas, real
inference-perf): two configs, two loads, a few seconds each -> the report, the evidence, and a
recommended stack config that `up` loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from stackutil import run_cli

from inferstack.stack.config import load_config

pytestmark = pytest.mark.integration

SHORT_DOCUMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "short-documents"


def test_tune_spec_on_a_tiny_budget_writes_the_report_and_a_config_up_accepts(engine_python, bench_python, tmp_path):
    out = tmp_path / "tune"
    env = dict(os.environ, INFERSTACK_STATE=str(tmp_path / "unused-state"))
    # a user's config measured with each candidate: one core (a replica that starts in ~35 s) and
    # short answers (two short documents), so each stage drains in seconds
    base = tmp_path / "mine.yaml"
    base.write_text(yaml.safe_dump({"engine": {"cores_per_replica": 1, "max_model_len": 1024}}))
    proc = run_cli("tune-spec", "--output", str(out), "--candidates", "none", "ngram:k=4", "--loads", "2",
                   "--budget-s", "60", "--temperature", "0", "--config", str(base), "--dataset", str(SHORT_DOCUMENTS),
                   env=env, timeout=1200)
    lines = proc.stdout
    assert "[tune-spec] plan: 2 configs x 2 loads x 3s" in lines
    assert "[tune-spec 2/2] ngram-k4 (ngram k=4, lookup 2..5): ready after" in lines
    assert "[tune-spec] recommended:" in lines

    evidence = json.loads((out / "tuning.json").read_text())
    measured = {m["name"]: m for m in evidence["measured"]}
    assert list(measured) == ["none", "ngram-k4"]
    for m in measured.values():
        assert m["error"] is None and len(m["points"]) == 2
        assert all(p["output_tok_s"] > 0 and p["failures"] == 0 for p in m["points"])
    # every candidate ran the baseline's load levels, and the server saw ngram drafts
    assert [p["rate"] for p in measured["ngram-k4"]["points"]] == [p["rate"] for p in measured["none"]["points"]]
    assert measured["none"]["points"][0]["acceptance"] is None
    assert measured["ngram-k4"]["points"][0]["acceptance"] is not None

    page = (out / "index.html").read_text()
    assert "Recommended:" in page and "ngram-k4: ngram k=4" in page and "data:image/png;base64," in page
    recommended = out / "recommended.yaml"
    best = evidence["recommendation"]["best"]
    config = load_config(recommended)  # what `inferstack up --config` loads
    assert config.speculative.method == ("none" if best == "none" else "ngram")
    data = yaml.safe_load(recommended.read_text())
    assert data["engine"]["extra_args"] == ["--override-generation-config", '{"temperature": 0.0}']
    assert data["engine"]["cores_per_replica"] == 1  # the user's own settings carried over
    assert not list((tmp_path / "unused-state").glob("*"))  # every candidate's stack is down
    assert not [d for d in (out / "state").iterdir() if (d / "stack.json").exists()]
