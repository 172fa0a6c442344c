"""Answer quality of the bundled model: a fixed prompt set and its float32 greedy references.

The prompt set (``data/quality_prompts.jsonl``: facts, arithmetic, instructions, short code) and
the references (``data/quality_references.json``: the tokens and text a float32 replica answers
greedily) ship with the package. ``benchmarks/dtype_quality.py`` measures each dtype and core plan
against them, and an integration test checks the default stack's answers, so a kernel or default
that flips answers fails ``make test``.

    answers = collect_answers(url, model, QUALITY_PROMPTS, max_tokens=REFERENCE_MAX_TOKENS)
    score = agreement(answers, load_references().answers)   # Agreement(first_n=..., full=...)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx

__all__ = ["FIRST_N_TOKENS", "QUALITY_PROMPTS", "REFERENCE_MAX_TOKENS", "Agreement", "Answer", "QualityPrompt",
           "References", "agreement", "collect_answers", "load_references", "references_path"]

REFERENCE_MAX_TOKENS = 32  # tokens per answer: enough for a short answer, cheap on 2 cores
FIRST_N_TOKENS = 8  # "the first tokens agree": where a near-tie flip shows first


@dataclass(frozen=True)
class QualityPrompt:
    id: str
    kind: str  # fact | arithmetic | instruction | code
    prompt: str


@dataclass(frozen=True)
class Answer:
    tokens: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class References:
    model: str
    dtype: str
    max_tokens: int
    made_with: str  # how the references were made (engine, dtype, cores, machine)
    answers: dict[str, Answer]


@dataclass(frozen=True)
class Agreement:
    """Share of prompts whose first ``FIRST_N_TOKENS`` tokens / whole answer equal the reference."""
    first_n: float
    full: float
    differing: tuple[str, ...]  # ids whose whole answer differs

    def __str__(self) -> str:
        return f"first {FIRST_N_TOKENS} tokens {self.first_n:.0%}, whole answer {self.full:.0%}"


def _data(name: str) -> Path:
    return Path(str(resources.files("inferstack.models") / "data" / name))


def _load_prompts() -> tuple[QualityPrompt, ...]:
    lines = _data("quality_prompts.jsonl").read_text().splitlines()
    return tuple(QualityPrompt(**json.loads(line)) for line in lines if line.strip())


QUALITY_PROMPTS = _load_prompts()


def references_path() -> Path:
    return _data("quality_references.json")


def load_references(path: Path | None = None) -> References:
    doc = json.loads((path or references_path()).read_text())
    answers = {k: Answer(tuple(v["tokens"]), v["text"]) for k, v in doc["answers"].items()}
    return References(doc["model"], doc["dtype"], doc["max_tokens"], doc["made_with"], answers)


def agreement(answers: dict[str, Answer], references: dict[str, Answer]) -> Agreement:
    ids = sorted(references)
    first = sum(answers[i].tokens[:FIRST_N_TOKENS] == references[i].tokens[:FIRST_N_TOKENS] for i in ids)
    differing = tuple(i for i in ids if answers[i].tokens != references[i].tokens)
    return Agreement(first / len(ids), (len(ids) - len(differing)) / len(ids), differing)


async def _answer(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Answer:
    r = await client.post("/v1/chat/completions", json={
        "model": model, "temperature": 0, "max_tokens": max_tokens, "logprobs": True,
        "messages": [{"role": "user", "content": prompt}]})
    r.raise_for_status()
    choice = r.json()["choices"][0]
    return Answer(tuple(t["token"] for t in choice["logprobs"]["content"]), choice["message"]["content"])


def collect_answers(base_url: str, model: str, prompts: tuple[QualityPrompt, ...] = QUALITY_PROMPTS,
                    max_tokens: int = REFERENCE_MAX_TOKENS, concurrency: int = 8,
                    timeout_s: float = 600.0) -> dict[str, Answer]:
    """Greedy answers of the OpenAI server at ``base_url`` (no ``/v1``), ``concurrency`` at a time."""
    async def run() -> dict[str, Answer]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
            async def one(p: QualityPrompt) -> tuple[str, Answer]:
                async with sem:
                    return p.id, await _answer(client, model, p.prompt, max_tokens)
            return dict(await asyncio.gather(*(one(p) for p in prompts)))
    return asyncio.run(run())
