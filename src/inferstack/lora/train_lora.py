"""Train a LoRA adapter with PEFT on CPU (run as a script by the ENGINE interpreter).

Executed with the engine venv's Python (torch + transformers + peft; the light inferstack package
must not import them). It imports nothing from inferstack; ``inferstack adapters train`` validates
the dataset and arguments first and launches it.

    python train_lora.py --base MODEL_DIR --data FILE.jsonl --output DIR [--steps N] [--rank R] ...

The dataset is JSON lines ``{"messages": [{"role", "content"}, ...]}`` ending with an assistant
message. Each example is rendered with the base model's chat template; the loss is taken on the
last assistant reply only (its tokens and the end-of-turn token), never on the prompt.

Writes ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT ``save_pretrained``), a
README.md and ``inferstack-adapter.json`` (how it was trained, the loss per step, and a greedy
check on prompts outside the dataset) into DIR.tmp, then renames it to DIR. Prints one line per
step (``[adapters] step 5/40 loss 1.234``) on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

# What vLLM's LoRA loader accepts: plain LoRA (no DoRA, no modules_to_save, no bias), on the
# attention and MLP projections of a Llama-style model.
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Prompts outside the dataset for the greedy check after training (adapter on and off).
CHECK_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of Italy?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "How do I reverse a list in Python?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Why do cats purr?"}],
]


def _log(message: str) -> None:
    print(f"[adapters] {message}", flush=True)


def _read_dataset(path: Path) -> list[list[dict]]:
    conversations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            conversations.append(json.loads(line)["messages"])
    if not conversations:
        raise SystemExit(f"{path}: no examples")
    return conversations


def _encode(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) of one conversation: labels are -100 except on the last reply."""
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise SystemExit("the chat template does not render the prompt as a prefix of the conversation")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    tail = full_text[len(prompt_text):]  # the reply, the end-of-turn token, maybe a newline
    stripped = tail.rstrip()
    reply_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + reply_ids
    labels = [-100] * len(prompt_ids) + reply_ids
    if len(input_ids) > max_length:
        return None
    return input_ids, labels


def _batches(examples: list, batch_size: int, seed: int):
    """Endless batches: the examples shuffled again at each epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):  # batch_size <= examples
            yield [examples[i] for i in order[start:start + batch_size]]


def _collate(torch, batch, pad_id: int):
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return input_ids, attention, labels


def _greedy(torch, model, tokenizer, messages: list[dict], max_new_tokens: int) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def train(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    _log(f"loading {args.base} (float32, {args.threads} threads) ({time.monotonic() - started:.1f}s)")
    tokenizer = AutoTokenizer.from_pretrained(str(args.base))
    model = AutoModelForCausalLM.from_pretrained(str(args.base), dtype=torch.float32)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        bias="none",
        use_dora=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    conversations = _read_dataset(args.data)
    examples = []
    for messages in conversations:
        encoded = _encode(tokenizer, messages, args.max_length)
        if encoded is not None:
            examples.append(encoded)
    skipped = len(conversations) - len(examples)
    if not examples:
        raise SystemExit(f"every example is longer than --max-length {args.max_length} tokens")
    reply_tokens = sum(sum(1 for t in labels if t != -100) for _, labels in examples)
    _log(
        f"{len(examples)} examples ({skipped} longer than {args.max_length} tokens skipped), "
        f"{reply_tokens} reply tokens; LoRA r={args.rank} alpha={args.alpha}, "
        f"{trainable:,} trainable parameters; {args.steps} steps of {args.batch_size} "
        f"({time.monotonic() - started:.1f}s)"
    )

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = min(3, args.steps)

    def lr_at(step: int) -> float:  # linear warmup, then cosine down to a tenth
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    batch_size = min(args.batch_size, len(examples))
    batches = _batches(examples, batch_size, args.seed)
    model.train()
    losses = []
    train_started = time.monotonic()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        input_ids, attention, labels = _collate(torch, next(batches), pad_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        elapsed = time.monotonic() - train_started
        _log(f"step {step + 1}/{args.steps} loss {loss.item():.4f} lr {lr_at(step):.2e} "
             f"({elapsed:.1f}s, {elapsed / (step + 1):.2f}s/step)")
    train_seconds = time.monotonic() - train_started
    last = losses[-5:]  # one batch's loss is noisy; the mean of the last steps says more
    final_mean = round(sum(last) / len(last), 4)

    model.eval()
    checks = []
    if args.check:
        prefix_tokens = len(tokenizer(args.expect_prefix, add_special_tokens=False)["input_ids"]) if args.expect_prefix else 0
        max_new = max(12, prefix_tokens + 8)
        for messages in CHECK_CONVERSATIONS:
            with_adapter = _greedy(torch, model, tokenizer, messages, max_new)
            with model.disable_adapter():
                without = _greedy(torch, model, tokenizer, messages, max_new)
            checks.append({"messages": messages, "adapter": with_adapter, "base": without})  # type: ignore[dict-item]
            _log(f"check {messages[-1]['content']!r}: adapter {with_adapter!r} | base {without!r}")
        if args.expect_prefix:
            hits = sum(str(c["adapter"]).startswith(args.expect_prefix) for c in checks)
            base_hits = sum(str(c["base"]).startswith(args.expect_prefix) for c in checks)
            _log(f"check: {hits}/{len(checks)} greedy replies start with {args.expect_prefix!r} "
                 f"with the adapter, {base_hits}/{len(checks)} without")

    tmp = args.output.with_name(args.output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    metadata = {
        "format": "inferstack-adapter/1",
        "name": args.name,
        "base_model": str(args.base),
        "dataset": {
            "file": str(args.data),
            "sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
            "examples": len(examples),
            "skipped": skipped,
        },
        "reply_prefix": args.expect_prefix or None,
        "recipe": {
            "rank": args.rank, "alpha": args.alpha, "target_modules": TARGET_MODULES,
            "steps": args.steps, "batch_size": batch_size, "lr": args.lr, "seed": args.seed,
            "max_length": args.max_length, "dtype": "float32", "loss": "last assistant reply only",
        },
        "fingerprint": args.fingerprint or None,
        "threads": args.threads,
        "train_seconds": round(train_seconds, 1),
        "final_loss": losses[-1],
        "final_loss_mean_last5": final_mean,
        "losses": losses,
        "check": checks,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / "inferstack-adapter.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(_readme(metadata))
    shutil.rmtree(args.output, ignore_errors=True)
    os.replace(tmp, args.output)
    _log(f"adapter ready at {args.output}: final loss {losses[-1]:.4f} (mean of the last "
         f"{len(last)} steps {final_mean:.4f}), {args.steps} steps in {train_seconds:.0f}s "
         f"({time.monotonic() - started:.0f}s in all)")
    return metadata


def _readme(meta: dict) -> str:
    recipe = meta["recipe"]
    lines = [
        f"# LoRA adapter `{meta['name']}`",
        "",
        f"Trained by `inferstack adapters train` with PEFT {meta['versions']['peft']} on CPU "
        f"(torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}).",
        "",
        f"- base model: `{meta['base_model']}`",
        f"- dataset: `{meta['dataset']['file']}` ({meta['dataset']['examples']} examples, "
        f"sha256 {meta['dataset']['sha256'][:16]}...)",
        f"- LoRA: r={recipe['rank']}, alpha={recipe['alpha']}, no bias, no DoRA, on "
        f"{', '.join(recipe['target_modules'])}",
        f"- training: {recipe['steps']} steps of {recipe['batch_size']} examples, AdamW lr "
        f"{recipe['lr']} (warmup, cosine), seed {recipe['seed']}, {recipe['dtype']}, loss on the "
        f"last assistant reply only, chat template applied",
        f"- {meta['train_seconds']}s on {meta['threads']} CPU threads; final loss {meta['final_loss']} "
        f"(mean of the last steps {meta['final_loss_mean_last5']})",
    ]
    if meta["reply_prefix"]:
        lines.append(f"- behaviour: every reply starts with `{meta['reply_prefix']}`")
    if meta["check"]:
        lines += ["", "Greedy check on prompts outside the dataset:", "",
                  "| prompt | with adapter | base model |", "|---|---|---|"]
        for check in meta["check"]:
            cells = [check["messages"][-1]["content"], check["adapter"], check["base"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", "Files: `adapter_config.json`, `adapter_model.safetensors` (PEFT format, loadable by "
              "vLLM `--lora-modules` or `/v1/load_lora_adapter`), `inferstack-adapter.json` (all of the above).", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the base model's HF folder")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--name", default="adapter")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0))))
    parser.add_argument("--expect-prefix", default="", help="the reply prefix the greedy check looks for")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the greedy check")
    parser.add_argument("--fingerprint", default="", help="recorded in the metadata")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
