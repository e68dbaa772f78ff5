"""Tokenizer: a ``tokenizers`` tokenizer plus the model's chat template.

Kept free of ``transformers`` so that a warm start only imports what it needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
from tokenizers import Tokenizer as _RustTokenizer

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Tokenizer:
    """Encode/decode text, apply the chat template, know the end-of-sequence ids."""

    def __init__(
        self,
        rust: _RustTokenizer,
        chat_template: str | None,
        eos_token_ids: set[int],
        bos_token: str | None = None,
    ) -> None:
        self.rust = rust
        self.chat_template = chat_template
        self.eos_token_ids = frozenset(eos_token_ids)
        self.bos_token = bos_token
        self._template = (
            jinja2.Environment(trim_blocks=False, lstrip_blocks=False).from_string(chat_template)
            if chat_template
            else None
        )

    @classmethod
    def from_dir(cls, path: str | Path, extra_eos_ids: tuple[int, ...] = ()) -> Tokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``)."""
        path = Path(path)
        rust = _RustTokenizer.from_file(str(path / "tokenizer.json"))
        config = {}
        if (path / "tokenizer_config.json").exists():
            config = json.loads((path / "tokenizer_config.json").read_text())
        template = config.get("chat_template")
        if (path / "chat_template.jinja").exists():
            template = (path / "chat_template.jinja").read_text()
        eos = set(extra_eos_ids)
        for key in ("eos_token", "unk_token"):
            token = config.get(key)
            if isinstance(token, dict):
                token = token.get("content")
            if key == "eos_token" and token is not None and rust.token_to_id(token) is not None:
                eos.add(rust.token_to_id(token))
        for special in ("<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>"):
            tid = rust.token_to_id(special)
            if tid is not None:
                eos.add(tid)
        return cls(rust, template, eos, config.get("bos_token") if isinstance(config.get("bos_token"), str) else None)

    @property
    def vocab_size(self) -> int:
        return self.rust.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings in it are recognised."""
        return self.rust.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.rust.decode(ids, skip_special_tokens=skip_special)

    def token_text(self, token_id: int) -> str:
        """The text a single token decodes to (for logs and tries)."""
        return self.rust.decode([token_id], skip_special_tokens=False)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Render ``messages`` with the generation prompt appended."""
        template = self._template
        if template is None:
            template = jinja2.Environment().from_string(CHATML_TEMPLATE)
        return template.render(messages=messages, add_generation_prompt=True, bos_token=self.bos_token or "")
