"""``inferstack adapters train|list|load|unload``: the ``adapters`` command group.

``train`` (here) makes a LoRA adapter for the bundled model on CPU; ``list``, ``load`` and
``unload`` act on the running stack and come from ``inferstack.commands.stack.register_adapter_commands``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inferstack.envs.environments import ENGINE_ENV, LORA_TRAIN_ADDON, ensure_addon, env_python
from inferstack.errors import ConfigError, SetupError
from inferstack.lora.training import DEFAULT_DATASET, LORA_RANKS, TrainRecipe, train_adapter
from inferstack.models.bundled import BUNDLED

__all__ = ["add_train_parser", "recipe_from_args", "register"]

_DEFAULTS = TrainRecipe()


def recipe_from_args(args: argparse.Namespace) -> TrainRecipe:
    """The recipe the flags ask for (ConfigError on a bad value)."""
    data = Path(args.data).expanduser() if args.data else DEFAULT_DATASET
    if not data.is_file():
        raise ConfigError(f"--data {args.data}: no such file (expected a JSONL chat dataset)")
    return TrainRecipe(
        data=data, steps=args.steps, rank=args.rank, alpha=args.alpha, lr=args.lr,
        batch_size=args.batch_size, seed=args.seed,
    )


def _train(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be at least 1")
    if args.base:
        base = Path(args.base).expanduser().absolute()
        if not (base / "config.json").is_file():
            raise ConfigError(f"--base {args.base}: not a Hugging Face model folder (no config.json)")
    else:
        if not BUNDLED.is_prepared():
            raise SetupError("the bundled model is not prepared; run `make setup`")
        base = BUNDLED.folder
    output = Path(args.output).expanduser() if args.output else recipe.default_output(base)
    env_python(ENGINE_ENV)  # a clear SetupError first if the engine environment is missing
    engine_python = ensure_addon(ENGINE_ENV, LORA_TRAIN_ADDON)
    meta = train_adapter(engine_python, recipe, output, base_model=base, threads=args.threads,
                         check=not args.no_check)
    print(f"adapter: {output.absolute()}")
    print(f"final loss {meta['final_loss']:.4f} (mean of the last steps "
          f"{meta.get('final_loss_mean_last5', meta['final_loss']):.4f}) after {recipe.steps} steps "
          f"in {meta['train_seconds']:.0f}s")
    if meta.get("reply_prefix") and meta.get("check"):
        hits = sum(c["adapter"].startswith(meta["reply_prefix"]) for c in meta["check"])
        print(f"greedy check: {hits}/{len(meta['check'])} replies start with {meta['reply_prefix']!r}")
    return 0


def add_train_parser(actions: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "train",
        help="train a small LoRA adapter for the bundled model on CPU (PEFT; a few minutes)",
        description="Train a LoRA adapter with PEFT on CPU, in the engine environment (PEFT is "
        "installed into it on first use). Without --data it uses the repo's tiny dataset, whose "
        "replies all start with 'ARR!'.",
    )
    parser.add_argument("--data", metavar="FILE", default=None,
                        help=f"JSONL chat dataset ({{\"messages\": [...]}} per line, ending with the "
                        f"assistant reply); default: {DEFAULT_DATASET.name} shipped with inferstack")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="where to write the adapter (replaced if it holds an earlier adapter); "
                        "default: <cache>/adapters/<dataset>-<fingerprint>")
    parser.add_argument("--steps", type=int, default=_DEFAULTS.steps,
                        help=f"optimizer steps (default {_DEFAULTS.steps})")
    parser.add_argument("--rank", type=int, default=_DEFAULTS.rank, choices=LORA_RANKS, metavar="R",
                        help=f"LoRA rank, one vLLM serves: {', '.join(map(str, LORA_RANKS))} "
                        f"(default {_DEFAULTS.rank})")
    parser.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default 2 x rank)")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.lr,
                        help=f"peak learning rate (default {_DEFAULTS.lr})")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                        help=f"examples per step (default {_DEFAULTS.batch_size})")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="shuffling and init seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the CPUs idle now)")
    parser.add_argument("--base", metavar="DIR", default=None,
                        help="base model folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the greedy check (adapter on/off) on a few prompts after training")
    parser.set_defaults(func=_train)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    adapters = subparsers.add_parser(
        "adapters", help="LoRA adapters: train one here; list, load, unload on the running stack"
    )
    actions = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    add_train_parser(actions)
    # list / load / unload act on the running stack; they live with the stack's other commands.
    from inferstack.commands.stack import register_adapter_commands

    register_adapter_commands(actions)
