"""The engine's tokens for a request, computed in the picker: the served model's own tokenizer
(``tokenizer.json``, Hugging Face ``tokenizers``) and chat template (``chat_template.jinja`` or
``tokenizer_config.json``'s ``chat_template``, rendered in a sandbox as transformers does), so a
request's blocks are keyed exactly as vLLM keys the blocks it caches. Checked against vLLM's own
``/tokenize`` (``tests/unit/gateway/test_kv_events.py`` on recorded answers, and on a live replica).

``Tokenizer.encode(request)`` returns None where the picker cannot tokenize as the engine would
(a template error, content it cannot render): the precise scorer then scores nothing for it.

Tokenizing is most of the picker's cost (~0.45 µs a character here), and most of a chat's text
comes back request after request: a system prompt, the earlier turns. A rendered chat is split at
the tokenizer's added tokens (``<|im_start|>``, ...), as the tokenizer itself splits before
anything else, so each piece between them tokenizes alone to the same ids. A byte-level BPE
tokenizer (GPT-2's pre-tokenizer regex, no normalizer: SmolLM2's) never makes a token across a
word boundary, so a long piece is cut further into chunks of ~256 characters, each cut at the first
space between two letters after that length (the same cuts for the same text, so a prefix that
recurs gives the same chunks), and a chunk not seen before into finer parts the same way; pieces,
chunks and parts are kept (LRU, ``_PIECES_KEPT``), so a chat that differs from an earlier one only
at its end costs the tokenizer only its last part. Where an added token matches loosely (lstrip,
rstrip, single_word, or normalized under a normalizer) the whole text is tokenized each time;
other tokenizers are not cut in chunks.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

from inferstack.gateway.request import InferenceRequest

__all__ = ["Tokenizer"]

_PIECES_KEPT = 8192  # distinct text pieces and chunks kept with their ids
_CHUNK_CHARS = 256  # a long piece's chunks
_FINE_CHARS = 48  # and a new chunk's parts
_WORD_GAP = re.compile(r"(?<=[^\W\d_]) (?=[^\W\d_])")  # a space between two letters: a pre-token boundary


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
        added = self._tok.get_added_tokens_decoder()
        exact = all(not (t.lstrip or t.rstrip or t.single_word or (t.normalized and self._tok.normalizer is not None))
                    for t in added.values())
        self._added = {t.content: i for i, t in added.items()}
        names = sorted(self._added, key=len, reverse=True)  # the longest first, as the tokenizer matches
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if exact and names else None
        self._pieces: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        pre = json.loads(self._tok.pre_tokenizer.__getstate__()) if self._tok.pre_tokenizer is not None else {}
        self._chunked = (self._tok.normalizer is None and pre.get("type") == "ByteLevel"
                         and pre.get("use_regex", True) is True)

    def encode(self, req: InferenceRequest) -> list[int] | None:
        if req.kind == "chat":
            if self._template is None or req.messages is None:
                return None
            try:
                text = self._template.render(messages=[_plain(m) for m in req.messages], add_generation_prompt=True,
                                             **self._specials)
            except Exception:  # noqa: BLE001 - any template failure: no precise score for this request
                return None
            return self._encode_pieces(text) if self._split is not None else \
                list(self._tok.encode(text, add_special_tokens=False).ids)
        return list(self._tok.encode(req.prompt, add_special_tokens=True).ids)

    def _encode_pieces(self, text: str) -> list[int]:
        assert self._split is not None
        ids: list[int] = []
        for i, piece in enumerate(self._split.split(text)):
            if i % 2:  # an added token (the split's captured group)
                ids.append(self._added[piece])
                continue
            for chunk in _chunks(piece, _CHUNK_CHARS) if self._chunked else (piece,):
                ids.extend(self._kept(chunk, self._chunked))
        return ids

    def _kept(self, text: str, cut: bool) -> tuple[int, ...]:
        """The ids of ``text``, kept; a long one not kept yet is made of finer chunks (kept too), so a
        chunk that differs from a kept one only at its end costs only its end."""
        kept = self._pieces.get(text)
        if kept is not None:
            self._pieces.move_to_end(text)
            return kept
        if cut and len(text) > 2 * _FINE_CHARS:
            kept = tuple(i for part in _chunks(text, _FINE_CHARS) for i in self._kept(part, False))
        else:
            kept = tuple(self._tok.encode(text, add_special_tokens=False).ids) if text else ()
        self._pieces[text] = kept
        if len(self._pieces) > _PIECES_KEPT:
            self._pieces.popitem(last=False)
        return kept


def _chunks(piece: str, size: int) -> list[str]:
    """``piece`` cut at word gaps into chunks of about ``size`` characters (the first gap past it)."""
    out, start = [], 0
    while len(piece) - start > 2 * size:
        gap = _WORD_GAP.search(piece, start + size)
        if gap is None:
            break
        out.append(piece[start:gap.start()])
        start = gap.start()
    out.append(piece[start:])
    return out


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
