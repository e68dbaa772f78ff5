"""The training loop behind ``sazanami train``: fine-tune a sazanami model on a task family.

One validated :class:`TrainConfig` says what to run; :func:`train` runs it with a tqdm
bar (loss and answer accuracy), writes a resumable checkpoint every
``checkpoint_every`` steps, on Ctrl-C and at the end (``OUT/checkpoint/state.pt``), and
finally saves the model into ``OUT`` in the layout ``sazanami.models.load(OUT)`` reads,
with the held-out accuracy in ``OUT/metrics.json``. Rerunning with the same ``OUT``
resumes from the checkpoint; a resumed run gives the same weights as an uninterrupted one
(the batch of step t, every noise stream and the optimizer state are functions of the
seed and t alone).

Accuracy is greedy exact match of the whole answer (its end token included), computed by
teacher forcing: every answer token must be the argmax given the correct prefix, which is
exactly when greedy decoding would write the answer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sazanami.errors import ParameterError, check_index
from sazanami.seeds import derive_seed
from sazanami.training import checkpoints
from sazanami.training.colors import Color, check_positive
from sazanami.training.embedding_noise import ColoredEmbeddingNoise
from sazanami.training.gradient_noise import ColoredGradientNoise
from sazanami.training.lr import ColoredLR, warmup_cosine
from sazanami.training.spectral_filter import GradientFilter, GrokfastEMA, GrokfastMA, SpectralGain
from sazanami.training.tasks import Batch, collate, encode, split

__all__ = ["FILTERS", "TrainConfig", "TrainResult", "train"]

FILTERS = ("none", "ema", "ma", "spectral")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field is a ``sazanami train`` option (``--lr-noise`` for ``lr_noise``)."""

    task: str = "letter_counting"
    """Reasoning-gym task family."""
    model: str = "smollm2-135m"
    """Model name or directory."""
    steps: int = 100
    """Optimizer steps."""
    batch: int = 8
    """Examples per step."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    warmup: int = 10
    """Linear warm-up steps before the cosine decay."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the data order, the noise and the train split."""
    train_size: int = 1000
    """Training examples generated."""
    test_size: int = 200
    """Held-out examples generated (another seed)."""
    max_len: int = 256
    """Longest example in tokens (prompts are cut from the left)."""
    lr_noise: Color | None = None
    """Colored learning rate COLOR:SIGMA, e.g. pink:0.3."""
    grad_noise: Color | None = None
    """Colored gradient noise COLOR:ETA, e.g. pink:0.01."""
    embed_noise: Color | None = None
    """Colored embedding noise COLOR:ALPHA (white:5 is NEFTune)."""
    filter: str = "none"
    """Spectral gradient filter: none, ema, ma, spectral."""
    filter_lamb: float = 2.0
    """The filter's amplification λ."""
    checkpoint_every: int = 50
    """Steps between checkpoints (0: only on Ctrl-C and at the end)."""
    eval_batch: int = 16
    """Batch size of the held-out evaluation."""

    def __post_init__(self) -> None:
        check_index("steps", self.steps, 1)
        check_index("batch", self.batch, 1)
        check_positive("lr", self.lr)
        check_index("warmup", self.warmup, 0)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_index("seed", self.seed, 0, 2**63 - 1)
        check_index("train_size", self.train_size, 1)
        check_index("test_size", self.test_size, 1)
        check_index("max_len", self.max_len, 8)
        check_index("checkpoint_every", self.checkpoint_every, 0)
        check_index("eval_batch", self.eval_batch, 1)
        check_positive("filter_lamb", self.filter_lamb, allow_zero=True)
        for name in ("lr_noise", "grad_noise", "embed_noise"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Color):
                raise ParameterError(name, f"{name} must be a Color (e.g. pink:0.3) or None, got {value!r}")
        if self.filter not in FILTERS:
            raise ParameterError("filter", f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Color) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        colors = {"lr_noise", "grad_noise", "embed_noise"}
        return cls(**{k: (Color.parse(v, k) if k in colors and v is not None else v) for k, v in data.items()})


@dataclass
class TrainResult:
    out: Path
    steps: int
    loss: float
    accuracy: float
    """Held-out greedy exact match."""
    resumed_from: int
    history: list[dict] = dataclasses.field(default_factory=list)


class _Run:
    """Everything that has state in one run, with a single state_dict."""

    def __init__(self, cfg: TrainConfig) -> None:
        from sazanami import models

        self.cfg = cfg
        backend = models.load(cfg.model, dtype="float32")
        self.tokenizer = backend.tokenizer
        self.model = checkpoints.trainable(backend)
        self.pad_id = min(self.tokenizer.eos_token_ids)
        train, test = split(cfg.task, cfg.train_size, cfg.test_size, cfg.seed)
        self.train = encode(self.tokenizer, train, cfg.max_len)
        self.test = encode(self.tokenizer, test, cfg.max_len)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        base = warmup_cosine(cfg.steps, min(cfg.warmup, cfg.steps))
        if cfg.lr_noise is not None:
            self.sched = ColoredLR(self.opt, cfg.lr_noise, derive_seed(cfg.seed, "lr"), base=base, max_steps=cfg.steps)
        else:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, base)
        self.grad_noise = (
            ColoredGradientNoise(params, cfg.grad_noise, derive_seed(cfg.seed, "grad"), max_steps=cfg.steps)
            if cfg.grad_noise is not None
            else None
        )
        self.embed_noise = None
        if cfg.embed_noise is not None:
            self.embed_noise = ColoredEmbeddingNoise(
                cfg.embed_noise,
                derive_seed(cfg.seed, "embed"),
                max_batch=cfg.batch,
                max_len=cfg.max_len,
                max_steps=cfg.steps,
            )
            self.embed_noise.attach(self.model.get_input_embeddings())
        self.filter: GradientFilter | None = {
            "none": lambda: None,
            "ema": lambda: GrokfastEMA(params, lamb=cfg.filter_lamb),
            "ma": lambda: GrokfastMA(params, lamb=cfg.filter_lamb),
            "spectral": lambda: SpectralGain(params, lamb=cfg.filter_lamb, max_steps=cfg.steps),
        }[cfg.filter]()
        self.step = 0
        self.history: list[dict] = []

    def batch(self, step: int) -> Batch:
        """The batch of ``step``: epoch e's permutation comes from (seed, e) alone."""
        n, B = len(self.train), self.cfg.batch
        idx = []
        pos = step * B
        while len(idx) < B:
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.cfg.seed, "data", epoch)))
            take = perm[offset : offset + B - len(idx)].tolist()
            idx += take
            pos += len(take)
        return collate([self.train[i] for i in idx], self.pad_id)

    def token_nll(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Answer-token NLL (B, T − 1) (0 off the answer), the answer mask (B, T − 1), per-row exact match (B,)."""
        logits = self.model(input_ids=b.ids, attention_mask=b.mask).logits[:, :-1]  # (B, T − 1, V)
        labels = b.labels[:, 1:]
        on = labels != -100
        nll = F.cross_entropy(logits.transpose(1, 2).float(), labels.clamp_min(0), reduction="none") * on
        hits = ((logits.argmax(-1) == labels) | ~on).all(dim=1)
        return nll, on, hits

    def loss_and_hits(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean answer-token NLL and per-row exact match (B,)."""
        nll, on, hits = self.token_nll(b)
        return nll.sum() / on.sum(), hits

    def train_step(self) -> dict:
        self.model.train()
        loss, hits = self.loss_and_hits(self.batch(self.step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.filter is not None:
            self.filter.step()
        if self.grad_noise is not None:
            self.grad_noise.step()
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.step += 1
        record = {"step": self.step, "loss": float(loss.detach()), "acc": float(hits.float().mean()), "lr": lr}
        self.history.append(record)
        return record

    @torch.no_grad()
    def evaluate_examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per held-out example: exact match (N,) and mean answer-token NLL (N,)."""
        self.model.eval()
        hits, nlls = [], []
        for i in range(0, len(self.test), self.cfg.eval_batch):
            nll, on, h = self.token_nll(collate(self.test[i : i + self.cfg.eval_batch], self.pad_id))
            hits.append(h)
            nlls.append(nll.sum(1) / on.sum(1))
        return torch.cat(hits), torch.cat(nlls)

    def evaluate(self) -> float:
        """Held-out greedy exact match."""
        hits, _ = self.evaluate_examples()
        return float(hits.float().mean()) if len(hits) else 0.0

    def state_dict(self) -> dict:
        pieces = {"grad_noise": self.grad_noise, "embed_noise": self.embed_noise, "filter": self.filter}
        return {
            "config": self.cfg.to_json(),
            "step": self.step,
            "history": self.history,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            **{k: (None if v is None else v.state_dict()) for k, v in pieces.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        for key in ("grad_noise", "embed_noise", "filter"):
            piece = getattr(self, key)
            if piece is not None:
                piece.load_state_dict(state[key])
        self.step = int(state["step"])
        self.history = list(state["history"])


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / "checkpoint" / "state.pt"


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Run ``cfg`` into ``out`` (resuming from ``out``'s checkpoint when there is one).

    ``on_step(record)`` is called after every step (tests raise ``KeyboardInterrupt`` in
    it). On ``KeyboardInterrupt`` a checkpoint is written and the interrupt re-raised.
    A checkpoint written for a different configuration is an error naming ``out``.
    """
    from tqdm import tqdm

    out = Path(out)
    run = _Run(cfg)
    ckpt = checkpoint_path(out)
    resumed = 0
    if ckpt.exists():
        state = checkpoints.load_state(ckpt)
        if state["config"] != cfg.to_json():
            raise ParameterError(
                "out", f"{out} holds a checkpoint of another configuration; use a new --out or the same options"
            )
        run.load_state_dict(state)
        resumed = run.step
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not progress, desc=f"train {cfg.task}", unit="step")
    try:
        while run.step < cfg.steps:
            rec = run.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.2f}", lr=f"{rec['lr']:.2e}")
            if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
                checkpoints.save_state(run.state_dict(), ckpt)
            if on_step is not None:
                on_step(rec)
    except KeyboardInterrupt:
        checkpoints.save_state(run.state_dict(), ckpt)
        bar.close()
        raise
    bar.close()
    checkpoints.save_state(run.state_dict(), ckpt)
    accuracy = run.evaluate()
    checkpoints.save_model(run.model, run.tokenizer, out)
    last = run.history[-1] if run.history else {"loss": math.nan}
    metrics = {
        "config": cfg.to_json(),
        "steps": run.step,
        "test_accuracy": accuracy,
        "test_size": len(run.test),
        "final_loss": last["loss"],
        "history": run.history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return TrainResult(out, run.step, last["loss"], accuracy, resumed, run.history)
