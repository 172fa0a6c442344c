"""Train a small LoRA adapter for the bundled model on CPU, and the bundled adapter itself.

The light side of ``inferstack adapters train``: it validates the dataset and the arguments (no
torch here), picks the thread count from the CPUs that are free now, and runs ``train_lora.py``
with the engine interpreter, which has torch, transformers and (from the ``LORA_TRAIN_ADDON``)
PEFT. Progress (step, loss) is printed as it comes.

The repo ships a tiny dataset, ``data/pirate.jsonl`` (``DEFAULT_DATASET``): 68 chat examples whose
replies all start with ``ARR!``. The default recipe (r=8, alpha=16, 40 steps of 8) teaches the
135M model that marker in a few minutes on two cores, so a greedy reply with the adapter starts
with ``ARR!`` and one without it does not.

``make setup`` prepares that adapter once in the cache (``prepare_bundled_adapter``), in a folder
named by a fingerprint of the dataset and the recipe; ``bundled_adapter()`` gives its folder, or a
SetupError saying to run ``make setup``.

Dataset format (JSON lines, OpenAI chat fine-tuning style)::

    {"messages": [{"role": "system", "content": "..."},          # optional
                  {"role": "user", "content": "What is 2 + 2?"},
                  {"role": "assistant", "content": "ARR! 2 + 2 is 4."}]}

Each conversation ends with an assistant message; the loss is on that last reply only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from inferstack.envs.environments import LORA_TRAIN_ADDON
from inferstack.errors import ConfigError, InferstackError, SetupError
from inferstack.lora.settings import MaxLoraRank
from inferstack.models.bundled import BUNDLED
from inferstack.paths import adapters_dir

__all__ = [
    "BUNDLED_ADAPTER",
    "DEFAULT_DATASET",
    "LORA_RANKS",
    "BundledAdapter",
    "TrainRecipe",
    "bundled_adapter",
    "common_reply_prefix",
    "free_cpus",
    "load_dataset",
    "prepare_bundled_adapter",
    "train_adapter",
]

DEFAULT_DATASET = Path(__file__).with_name("data") / "pirate.jsonl"
TRAIN_SCRIPT = Path(__file__).with_name("train_lora.py")
# The ranks vLLM's --max-lora-rank takes; an adapter of another rank could never be served.
LORA_RANKS: tuple[int, ...] = tuple(get_args(MaxLoraRank))
_ROLES = ("system", "user", "assistant")
# Bump when train_lora.py changes what it produces for the same recipe: the bundled adapter's
# folder name changes with it, so `make setup` trains it again.
_RECIPE_VERSION = 1
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "inferstack-adapter.json")


def load_dataset(path: Path) -> list[list[dict[str, str]]]:
    """The conversations of a JSONL dataset, or ConfigError naming the line and what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"dataset {path} cannot be read: {exc.strerror or exc}") from exc
    conversations = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"dataset {path} line {number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where} is not JSON ({exc}); expected one JSON object per line") from exc
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or len(messages) < 2:
            raise ConfigError(
                f"{where}: expected {{\"messages\": [...]}} with a user message and an assistant reply"
            )
        for index, message in enumerate(messages):
            if (
                not isinstance(message, dict)
                or message.get("role") not in _ROLES
                or not isinstance(message.get("content"), str)
                or not message["content"].strip()
            ):
                raise ConfigError(
                    f"{where}: message {index} must be {{\"role\": system|user|assistant, "
                    f"\"content\": non-empty text}}, got {json.dumps(message)[:120]}"
                )
        if messages[-1]["role"] != "assistant":
            raise ConfigError(f"{where}: the last message must be the assistant's reply (the loss is on it)")
        if not any(m["role"] == "user" for m in messages):
            raise ConfigError(f"{where}: no user message")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise ConfigError(f"dataset {path} has no examples")
    return conversations


def common_reply_prefix(conversations: list[list[dict[str, str]]], min_chars: int = 3) -> str:
    """The text every last reply starts with (trailing spaces dropped), or '' if under min_chars:
    the behaviour the greedy check after training looks for."""
    prefix = os.path.commonprefix([c[-1]["content"] for c in conversations]).rstrip()
    return prefix if len(prefix) >= min_chars else ""


@dataclass(frozen=True)
class TrainRecipe:
    """How an adapter is trained; together with the dataset's bytes it names the result."""

    data: Path = DEFAULT_DATASET
    steps: int = 40
    rank: int = 8
    alpha: int | None = None  # None: 2 * rank
    lr: float = 2e-3
    batch_size: int = 8
    seed: int = 0
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.rank not in LORA_RANKS:
            raise ConfigError(
                f"--rank {self.rank} is not a rank vLLM serves; valid: {', '.join(map(str, LORA_RANKS))}"
            )
        for flag, value, low in (("--steps", self.steps, 1), ("--batch-size", self.batch_size, 1),
                                 ("--max-length", self.max_length, 16)):
            if value < low:
                raise ConfigError(f"{flag} {value} is too small; at least {low}")
        if self.alpha is not None and self.alpha < 1:
            raise ConfigError(f"--alpha {self.alpha} must be at least 1")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr {self.lr} must be between 0 and 1")

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank

    def fingerprint(self, base_model: Path) -> str:
        try:
            data_sha = hashlib.sha256(Path(self.data).read_bytes()).hexdigest()
        except OSError as exc:
            raise ConfigError(f"dataset {self.data} cannot be read: {exc.strerror or exc}") from exc
        key = [_RECIPE_VERSION, data_sha, self.steps, self.rank, self.lora_alpha, self.lr,
               self.batch_size, self.seed, self.max_length, Path(base_model).name,
               list(LORA_TRAIN_ADDON.packages)]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]

    def default_output(self, base_model: Path) -> Path:
        """``<cache>/adapters/<dataset name>-<fingerprint>``."""
        return adapters_dir() / f"{Path(self.data).stem}-{self.fingerprint(base_model)}"


def free_cpus(sample_s: float = 0.5) -> int:
    """How many of this process's CPUs are idle now (at least 1), from /proc/stat over sample_s."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return max(1, os.cpu_count() or 1)
    try:
        before = _cpu_times(allowed)
        time.sleep(sample_s)
        after = _cpu_times(allowed)
    except (OSError, ValueError):
        return len(allowed)
    total = after[0] - before[0]
    idle = after[1] - before[1]
    if total <= 0:
        return len(allowed)
    return max(1, min(len(allowed), round(len(allowed) * idle / total)))


def _cpu_times(cpus: list[int]) -> tuple[int, int]:
    """(total, idle + iowait) jiffies summed over the given CPUs."""
    wanted = {f"cpu{n}" for n in cpus}
    total = idle = 0
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:]]
            total += sum(values[:8])  # user..steal; guest time is already counted in user
            idle += values[3] + (values[4] if len(values) > 4 else 0)
    return total, idle


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or (
        any(output.iterdir()) and not (output / "adapter_config.json").is_file()
    )):
        raise ConfigError(
            f"--output {output} exists and is not an adapter folder; give a new or empty folder "
            f"(an adapter folder from an earlier run is replaced)"
        )


def train_adapter(
    engine_python: Path,
    recipe: TrainRecipe,
    output: Path,
    *,
    base_model: Path,
    name: str | None = None,
    threads: int | None = None,
    check: bool = True,
) -> dict:
    """Train ``recipe`` on ``base_model`` into ``output`` with the engine interpreter; returns the
    adapter's metadata (``inferstack-adapter.json``). Progress goes to stdout."""
    conversations = load_dataset(recipe.data)
    output = Path(output).expanduser().absolute()
    _check_output(output)
    if not (Path(base_model) / "config.json").is_file():
        raise SetupError(f"base model folder {base_model} has no config.json; run `make setup`")
    threads = threads or free_cpus()
    prefix = common_reply_prefix(conversations)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(engine_python), str(TRAIN_SCRIPT),
        "--base", str(base_model), "--data", str(Path(recipe.data).absolute()), "--output", str(output),
        "--name", name or Path(recipe.data).stem,
        "--steps", str(recipe.steps), "--rank", str(recipe.rank), "--alpha", str(recipe.lora_alpha),
        "--lr", str(recipe.lr), "--batch-size", str(recipe.batch_size), "--seed", str(recipe.seed),
        "--max-length", str(recipe.max_length), "--threads", str(threads),
        "--fingerprint", recipe.fingerprint(base_model),
    ]
    if prefix:
        command += ["--expect-prefix", prefix]
    if not check:
        command.append("--no-check")
    print(
        f"[adapters] training {output.name} on {len(conversations)} examples from {recipe.data} "
        f"({recipe.steps} steps, r={recipe.rank}, {threads} threads)", flush=True,
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(command, stdout=None, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0 or not all((output / f).is_file() for f in _ADAPTER_FILES):
        raise InferstackError(
            f"training the adapter failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads((output / "inferstack-adapter.json").read_text())


@dataclass(frozen=True)
class BundledAdapter:
    """The adapter ``make setup`` trains for the bundled model: replies start with ``reply_prefix``."""

    name: str
    reply_prefix: str
    recipe: TrainRecipe = field(default_factory=TrainRecipe)

    @property
    def folder(self) -> Path:
        return adapters_dir() / f"{self.name}-{self.recipe.fingerprint(BUNDLED.folder)}"

    def is_prepared(self) -> bool:
        return all((self.folder / f).is_file() for f in _ADAPTER_FILES)


BUNDLED_ADAPTER = BundledAdapter(name="pirate", reply_prefix="ARR!")


def bundled_adapter(adapter: BundledAdapter = BUNDLED_ADAPTER) -> Path:
    """The folder of the bundled adapter (adapter_config.json + adapter_model.safetensors), or
    SetupError saying how to prepare it."""
    if not adapter.is_prepared():
        raise SetupError(
            f"the bundled LoRA adapter '{adapter.name}' is not prepared (expected at {adapter.folder}); "
            f"run `make setup` (or `.venv/bin/inferstack setup`)"
        )
    return adapter.folder


def prepare_bundled_adapter(engine_python: Path, adapter: BundledAdapter = BUNDLED_ADAPTER) -> Path:
    """Train the bundled adapter once (a few minutes on CPU); returns its folder. Idempotent."""
    if adapter.is_prepared():
        print(f"[adapters] {adapter.name}: ready (cached at {adapter.folder})", flush=True)
        return adapter.folder
    if not BUNDLED.is_prepared():
        raise SetupError("the bundled model is not prepared; run `make setup`")
    started = time.monotonic()
    meta = train_adapter(engine_python, adapter.recipe, adapter.folder, base_model=BUNDLED.folder,
                         name=adapter.name)
    checks = meta.get("check") or []
    hits = sum(c["adapter"].startswith(adapter.reply_prefix) for c in checks)
    if checks and hits < len(checks):
        print(f"[adapters] warning: only {hits}/{len(checks)} greedy check replies start with "
              f"{adapter.reply_prefix!r}", file=sys.stderr, flush=True)
    print(f"[adapters] {adapter.name}: ready in {time.monotonic() - started:.0f}s", flush=True)
    return adapter.folder
