"""Speculative decoding is lossless, and the stack's lifecycle leaves nothing behind.

Four one-replica float32 stacks (no gateway) start at once, each on one core of its own affinity:
plain (no speculation: the reference), draft, suffix and load-aware ngram. A vLLM start is mostly
one core's imports, so two cores start them side by side (measured: 81-94 s for the four, one core
each; 144 s with two cores each; 210 s before replicas ran their model in the engine core). Every method that runs here
answers greedy prompts token for token as the plain replica does; the ones that cannot run fail
before anything starts; `down` leaves nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import yaml
from stackutil import RunningStack, chat, detached_stack, run_cli

from inferstack.engine.metrics import fetch_figures
from inferstack.process import free_port_block, group_alive

pytestmark = pytest.mark.integration

PROMPTS = [
    "Repeat exactly: The cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "Copy this list: apples, pears, plums, apples, pears, plums, apples, pears, plums.",
    "What is the capital of France? Answer in one sentence.",
    "Write the numbers from 1 to 20 separated by commas.",
]

SPECULATIVE = {
    "plain": {"method": "none"},
    # the bundled model drafts for itself: the only weights here with its vocabulary
    "draft": {"method": "draft", "model": "smollm2-135m-instruct", "num_speculative_tokens": 2},
    "suffix": {"method": "suffix", "num_speculative_tokens": 8},
    # n-gram drafting at batch 1 only: alone it is plain n-gram speculation, drafting every step
    "load-aware": {"method": "ngram", "num_speculative_tokens": 4, "off_above_batch": 1},
}


@pytest.fixture(scope="module")
def stacks(engine_python, tmp_path_factory) -> Iterator[dict[str, RunningStack]]:
    base = free_port_block(len(SPECULATIVE), start=19100)
    cores = sorted(os.sched_getaffinity(0))
    with ExitStack() as running, ThreadPoolExecutor(len(SPECULATIVE)) as pool:
        def up(i: int, name: str) -> RunningStack:
            # each stack on one core (its supervisor plans within the affinity it is given): two
            # starts per core on this machine, and each replica runs its model in its engine core
            return running.enter_context(detached_stack(tmp_path_factory.mktemp(f"{name}-state"), {
                "replicas": 1, "speculative": SPECULATIVE[name], "gateway": {"enabled": False},
                "batch": {"enabled": False}, "engine": {"base_port": base + i, "dtype": "float32"}},
                cpus={cores[i % len(cores)]}))

        futures = {name: pool.submit(up, i, name) for i, name in enumerate(SPECULATIVE)}
        started = {name: f.result() for name, f in futures.items()}
        yield started


@pytest.fixture(scope="module")
def plain_stack(stacks) -> RunningStack:
    return stacks["plain"]


_PLAIN_ANSWERS: dict[str, str] = {}  # prompt -> the plain replica's answer: greedy, so asked once


def _answers(stack: RunningStack, prompts: list[str] = PROMPTS, concurrent: bool = False) -> list[str]:
    def one(prompt: str) -> str:
        reply = chat(f"{stack.replica_urls[0]}/v1", stack.served_model, prompt, max_tokens=64)
        return reply["choices"][0]["message"]["content"]

    if not concurrent:
        return [one(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, prompts))


def _plain_answers(plain: RunningStack, prompts: list[str] = PROMPTS) -> list[str]:
    """The unspeculated replica's greedy answers, each prompt asked once (the references every
    lossless check compares with)."""
    missing = [p for p in dict.fromkeys(prompts) if p not in _PLAIN_ANSWERS]
    for prompt, answer in zip(missing, _answers(plain, missing)):  # one at a time, as the references were
        _PLAIN_ANSWERS[prompt] = answer
    return [_PLAIN_ANSWERS[p] for p in prompts]


def _drafts(stack: RunningStack) -> tuple[float, float]:
    figures = fetch_figures(stack.replica_urls[0], timeout_s=5.0)
    assert figures is not None
    return figures.spec_draft_tokens, figures.spec_accepted_tokens


def test_draft_model_speculation_is_lossless(stacks):
    draft = stacks["draft"]
    assert draft.state().speculative == "draft"
    with ThreadPoolExecutor(1) as pool:  # the plain references on their own core meanwhile
        references = pool.submit(_plain_answers, stacks["plain"])
        assert _answers(draft) == references.result()
    drafted, accepted = _drafts(draft)
    assert drafted > 0 and accepted / drafted > 0.9  # a model agrees with itself (float32, greedy)


def test_suffix_decoding_is_lossless(stacks):
    suffix = stacks["suffix"]
    assert _answers(suffix) == _plain_answers(stacks["plain"])
    assert _drafts(suffix)[0] > 0


def test_ngram_speculation_is_lossless_and_load_aware_drafts_only_at_low_batch(stacks):
    ngram, prompts = stacks["load-aware"], [p for p in PROMPTS for _ in range(2)]
    before = _drafts(ngram)[0]
    assert _answers(ngram, prompts) == _plain_answers(stacks["plain"], prompts)  # one at a time: batch 1
    alone = _drafts(ngram)[0] - before
    assert _answers(ngram, prompts, concurrent=True) == _plain_answers(stacks["plain"], prompts)
    together = _drafts(ngram)[0] - before - alone
    # batch 1 drafts every step; 8 at once only once the others have finished
    assert alone > 0 and together < 0.5 * alone, (alone, together)


@pytest.mark.parametrize(("flags", "message"), [
    (["--spec", "mtp"], "smollm2-135m-instruct has none"),
    (["--spec", "eagle3"], "needs an EAGLE head trained for the target model"),
])
def test_methods_that_cannot_run_with_this_model_fail_before_anything_starts(tmp_path, flags, message):
    env = dict(os.environ, INFERSTACK_STATE=str(tmp_path / "state"))
    proc = run_cli("up", "--detach", "--no-gateway", *flags, env=env, timeout=120, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "nearest working method here is ngram" in proc.stderr or "ngram (prompt lookup)" in proc.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("replica-*.log"))


def test_a_second_up_in_the_same_state_dir_is_refused(plain_stack):
    proc = run_cli("up", "--detach", "--replicas", "1", env=plain_stack.env, check=False)
    assert proc.returncode == 2
    assert "already running" in proc.stderr


def test_down_leaves_no_process(plain_stack):
    data = plain_stack.state()
    pids = [r.pid for r in data.replicas if r.pid] + [data.supervisor_pid]
    run_cli("down", env=plain_stack.env, timeout=300)
    assert not any(group_alive(pid) for pid in pids), pids
    assert not (plain_stack.state_dir / "stack.json").exists()
    proc = run_cli("status", "--json", env=plain_stack.env, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["running"] is False


def test_down_while_starting_stops_everything(tmp_path):
    import subprocess
    import sys
    import time

    env = dict(os.environ, INFERSTACK_STATE=str(tmp_path / "state"))
    config = tmp_path / "starting.yaml"
    config.write_text(yaml.safe_dump({
        "replicas": 1, "gateway": {"enabled": False},
        "engine": {"base_port": free_port_block(1, start=19120)},
    }))
    up = subprocess.Popen([sys.executable, "-m", "inferstack", "up", "--detach", "--config", str(config)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_file = tmp_path / "state" / "stack.json"
    deadline = time.monotonic() + 60
    pids: list[int] = []
    while time.monotonic() < deadline and not pids:
        if state_file.exists():
            data = json.loads(state_file.read_text())
            pids = [r["pid"] for r in data["replicas"] if r["pid"]] + [data["supervisor_pid"]]
        time.sleep(0.2)
    assert pids, "the supervisor never published its replicas"
    run_cli("down", env=env, timeout=120)
    _, stderr = up.communicate(timeout=120)
    assert up.returncode != 0 and "exited with code" in stderr
    assert not any(group_alive(pid) for pid in pids), pids
    assert not state_file.exists()
