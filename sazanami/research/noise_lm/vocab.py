"""A word-level tokenizer for the noise LM, wrapped in sazanami's :class:`Tokenizer`.

Text is lower-cased, everything but letters, ``.`` and ``,`` becomes a space, and words
outside the ``size`` most frequent map to ``<unk>``. The chat template renders message
contents only: the model was trained on plain text, not on chat turns.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as RustTokenizer
from tokenizers.models import WordLevel

from sazanami.backends.tokenizer import Tokenizer

SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = "<|endoftext|>"
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


def _pipeline(rust: RustTokenizer) -> RustTokenizer:
    rust.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z.,]+"), " ")])
    rust.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return rust


def words(text: str) -> list[str]:
    """The word pieces ``text`` splits into (before the vocabulary is applied)."""
    rust = _pipeline(RustTokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")))
    norm = rust.normalizer.normalize_str(text)
    return [w for w, _ in rust.pre_tokenizer.pre_tokenize_str(norm)]


def build(texts: list[str], size: int) -> Tokenizer:
    """The ``size`` most frequent words of ``texts`` (ties alphabetical) plus the specials."""
    counts = Counter(w for t in texts for w in words(t))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(size - len(SPECIALS), 0)]
    vocab = {s: i for i, s in enumerate(SPECIALS)} | {w: i + len(SPECIALS) for i, (w, _) in enumerate(ranked)}
    rust = _pipeline(RustTokenizer(WordLevel(vocab, unk_token="<unk>")))
    rust.add_special_tokens(SPECIALS[1:])  # <unk> stays visible: skipped, it would glue its neighbours
    return wrap(rust)


def wrap(rust: RustTokenizer) -> Tokenizer:
    return Tokenizer(rust, TEMPLATE, {rust.token_to_id(EOS)})


def save(tokenizer: Tokenizer, path: Path) -> None:
    tokenizer.rust.save(str(path))


def load(path: Path) -> Tokenizer:
    return wrap(RustTokenizer.from_file(str(path)))
