"""The engine's tokens for a request, computed in the picker: the served model's own tokenizer
(``tokenizer.json``, Hugging Face ``tokenizers``) and chat template (``chat_template.jinja`` or
``tokenizer_config.json``'s ``chat_template``, rendered in a sandbox as transformers does), so a
request's blocks are keyed exactly as vLLM keys the blocks it caches. Checked against vLLM's own
``/tokenize`` (``tests/unit/gateway/test_kv_events.py`` on recorded answers, and on a live replica).

``Tokenizer.encode(request)`` returns None where the picker cannot tokenize as the engine would
(a template error, content it cannot render): the precise scorer then scores nothing for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from inferstack.gateway.request import InferenceRequest

__all__ = ["Tokenizer"]


class Tokenizer:
    def __init__(self, model_dir: Path) -> None:
        import jinja2.sandbox
        from tokenizers import Tokenizer as HfTokenizer

        model_dir = Path(model_dir)
        self._tok = HfTokenizer.from_file(str(model_dir / "tokenizer.json"))
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        template_path = model_dir / "chat_template.jinja"
        source = template_path.read_text() if template_path.exists() else config.get("chat_template")
        self._specials = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source) if isinstance(source, str) else None

    def encode(self, req: InferenceRequest) -> list[int] | None:
        if req.kind == "chat":
            if self._template is None or req.messages is None:
                return None
            try:
                text = self._template.render(messages=[_plain(m) for m in req.messages], add_generation_prompt=True,
                                             **self._specials)
            except Exception:  # noqa: BLE001 - any template failure: no precise score for this request
                return None
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        return list(self._tok.encode(req.prompt, add_special_tokens=True).ids)


def _token_text(value: object) -> str:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older tokenizer configs
        return str(value.get("content", ""))
    return "" if value is None else str(value)


def _plain(message: object) -> dict[str, object]:
    """A message as vLLM hands a string-content template: text parts joined by newlines."""
    if not isinstance(message, dict):
        return {}
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return {**message, "content": "" if content is None else content}


def _raise(message: str) -> None:
    raise ValueError(message)
