"""Training data generated offline: reasoning-gym task families as (prompt, answer) pairs.

Train and test splits come from different seeds; test questions that also occur in the
train split are dropped, so the held-out accuracy is on unseen questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sazanami.errors import ParameterError, check_index

__all__ = ["Batch", "Example", "encode", "examples", "task_names"]

INSTRUCTION = "\nAnswer with the final answer only."


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str


def task_names() -> list[str]:
    """The reasoning-gym task families installed."""
    import reasoning_gym.factory

    return sorted(reasoning_gym.factory.DATASETS)


def examples(task: str, size: int, seed: int) -> list[Example]:
    """``size`` examples of ``task`` generated with ``seed`` (no download)."""
    import reasoning_gym

    size = check_index("size", size, 1)
    if task not in task_names():
        raise ParameterError("task", f"task must be a reasoning-gym task family (e.g. letter_counting), got {task!r}")
    data = reasoning_gym.create_dataset(task, size=size, seed=seed)
    return [Example(str(d["question"]), str(d["answer"])) for d in data]


def split(task: str, train_size: int, test_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Train (seed) and held-out test (another seed, train questions removed) examples."""
    from sazanami.seeds import derive_seed

    train = examples(task, train_size, seed)
    seen = {e.prompt for e in train}
    test = [e for e in examples(task, test_size, derive_seed(seed, "test") % 2**31) if e.prompt not in seen]
    return train, test


@dataclass
class Batch:
    """Right-padded token batch: ids (B, T), mask (B, T), labels (B, T) with −100 off the answer."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


def encode(tokenizer, items: list[Example], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + end token) per example, the prompt cut from the left to fit ``max_len``."""
    end = tokenizer.encode("<|im_end|>")
    out = []
    for e in items:
        prompt = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": e.prompt + INSTRUCTION}]))
        answer = tokenizer.encode(e.answer) + end
        keep = max(1, max_len - len(answer))
        out.append((prompt[-keep:], answer[: max_len - 1]))
    return out


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    T = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), T), dtype=torch.long)
    labels = torch.full((len(pairs), T), -100, dtype=torch.long)
    for b, (p, a) in enumerate(pairs):
        n = len(p) + len(a)
        ids[b, :n] = torch.tensor(p + a)
        mask[b, :n] = 1
        labels[b, len(p) : n] = torch.tensor(a)
    return Batch(ids, mask, labels)


__all__ += ["collate", "split"]
