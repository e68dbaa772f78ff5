"""Training runs on the tiny model: resume after Ctrl-C, pruning, the fine-tuned model in the engine, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.training import checkpoints, pruning
from sazanami.training.colors import Color
from sazanami.training.commands import prune as prune_cmd
from sazanami.training.commands import train as train_cmd
from sazanami.training.trainer import TrainConfig, checkpoint_path, train

CFG = TrainConfig(
    task="letter_counting",
    model="tiny-random",
    steps=4,
    batch=3,
    lr=1e-3,
    train_size=12,
    test_size=6,
    max_len=96,
    lr_noise=Color(1.0, 0.3),
    grad_noise=Color(1.0, 1e-4),
    embed_noise=Color(1.0, 5.0),
    filter="ema",
    checkpoint_every=0,
)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return checkpoints.load_state(checkpoint_path(out))["model"]


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    full = train(CFG, tmp_path / "full", progress=False)

    def stop_at_2(rec: dict) -> None:
        if rec["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, tmp_path / "cut", progress=False, on_step=stop_at_2)
    assert checkpoints.load_state(checkpoint_path(tmp_path / "cut"))["step"] == 2
    resumed = train(CFG, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 2
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the result loads like any model and generates in the engine
    backend = models.load(str(tmp_path / "cut"), dtype="float32")
    out = Engine(backend).generate("hi", SamplingParams(max_tokens=4, seed=1))
    assert out[0].token_ids
    # another configuration cannot silently continue this checkpoint
    with pytest.raises(ParameterError, match="another configuration") as exc:
        train(TrainConfig(**{**CFG.__dict__, "lr": 2e-3}), tmp_path / "cut", progress=False)
    assert exc.value.param == "out"


def test_train_config_validation() -> None:
    with pytest.raises(ParameterError, match=r"steps must be an integer in \[1, inf\), got 0") as exc:
        TrainConfig(steps=0)
    assert exc.value.param == "steps"
    with pytest.raises(ParameterError, match="filter must be one of") as exc:
        TrainConfig(filter="kalman")
    with pytest.raises(ParameterError, match="task must be a reasoning-gym"):
        train(TrainConfig(task="nope", model="tiny-random"), "/nonexistent-never-written", progress=False)


@pytest.fixture(scope="module")
def tiny_hf():
    return checkpoints.trainable(models.load("tiny-random"))


def test_trainable_matches_backend(tiny_hf) -> None:
    backend = models.load("tiny-random")
    ids = torch.tensor([backend.tokenizer.encode("hello, world")])
    with torch.no_grad():
        ref = backend.forward(ids, backend.new_cache(1, 32), torch.tensor([0]), last_only=False)
        out = tiny_hf(ids).logits
    assert torch.allclose(ref, out, atol=1e-4)


@pytest.mark.parametrize("score", pruning.SCORES)
def test_prune_removes_exactly_the_requested_units(score: str, tmp_path: Path) -> None:
    backend = models.load("tiny-random")
    net = checkpoints.trainable(backend)
    calib = pruning.text_windows(backend.tokenizer, "calibration", 64)[:4]
    scores = pruning.score_units(net, calib, score)
    cfg = net.config
    H, D, I = cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size
    removed = pruning.prune(net, scores, 0.5)
    assert removed.counts() == (cfg.num_hidden_layers * H // 2, cfg.num_hidden_layers * I // 2)
    for layer, heads, chans, s in zip(net.model.layers, removed.heads, removed.channels, scores):
        assert heads == sorted(torch.argsort(s.heads, stable=True)[: H // 2].tolist())
        q = layer.self_attn.q_proj.weight.view(H, D, -1)
        o = layer.self_attn.o_proj.weight.view(-1, H, D)
        zero_heads = [h for h in range(H) if not q[h].any() and not o[:, h].any()]
        zero_chans = [c for c in range(I) if not layer.mlp.down_proj.weight[:, c].any()]
        assert zero_heads == heads and zero_chans == chans  # exactly these, no others
    # the pruned model saves, loads and runs in the engine
    checkpoints.save_model(net, backend.tokenizer, tmp_path / "pruned")
    pruned = models.load(str(tmp_path / "pruned"), dtype="float32")
    assert Engine(pruned).generate("hi", SamplingParams(max_tokens=3, seed=0))[0].token_ids
    held = pruning.text_windows(backend.tokenizer, "heldout", 64)[:2]
    assert pruning.perplexity(net, held) > 1.0


def test_spectral_score_prunes_the_whitest_units_first() -> None:
    """Channel activations replaced by known series: white (β = 0), blue (differenced white,
    β < 0) and red (AR(1), β > 0). The whitest goes first, not the bluest (the old β̂ order)."""
    backend = models.load("tiny-random")
    net = checkpoints.trainable(backend)
    calib = pruning.text_windows(backend.tokenizer, "calibration", 64)[:4]
    B, T, I = calib.shape[0], calib.shape[1], net.config.intermediate_size
    gen = torch.Generator().manual_seed(0)
    white = torch.randn(B, T + 1, I, generator=gen)
    red = torch.zeros(B, T, I)
    for t in range(1, T):
        red[:, t] = 0.95 * red[:, t - 1] + white[:, t]
    series = red.clone()  # (B, T, I): every channel red ...
    series[..., 0] = white[:, 1:, 0]  # ... but channel 0 white
    series[..., 1] = white[:, 1:, 1] - white[:, :-1, 1]  # and channel 1 blue

    def replace(mod, args):  # runs before score_units' hooks (registered first)
        return (series[: args[0].shape[0]].to(args[0].dtype),)

    handles = [layer.mlp.down_proj.register_forward_pre_hook(replace) for layer in net.model.layers]
    try:
        scores = pruning.score_units(net, calib, "spectral", batch=B)
    finally:
        for h in handles:
            h.remove()
    for s in scores:
        assert torch.argsort(s.channels)[0].item() == 0  # white is removed first
        assert s.channels[1] > 1.0 and s.channels[2] > 1.0  # |β̂| of blue and red: far from white
    removed = pruning.prune(net, scores, 1.5 / I)  # round(1.5) = 2 channels per layer
    assert all(chans[0] == 0 and 1 not in chans for chans in removed.channels)


def test_prune_validation(tiny_hf) -> None:
    with pytest.raises(ParameterError, match=r"sparsity must be in \[0, 1\)"):
        pruning.prune(tiny_hf, [], 1.0)
    with pytest.raises(ParameterError, match="score must be one of"):
        pruning.score_units(tiny_hf, None, "entropy")


def test_cli_train_and_prune(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "letter_counting",
        "--model",
        "tiny-random",
        "--steps",
        "2",
        "--batch",
        "2",
        "--train-size",
        "8",
        "--test-size",
        "4",
        "--max-len",
        "96",
        "--embed-noise",
        "white:5",
        "--quiet",
        "--out",
        str(tmp_path / "t"),
    ]
    res = runner.invoke(train_cmd, args)
    assert res.exit_code == 0, res.output
    assert "held-out exact match" in res.output
    res = runner.invoke(train_cmd, [*args[:-2], "--lr-noise", "teal:1", "--out", str(tmp_path / "u")])
    assert isinstance(res.exception, ParameterError) and res.exception.param == "lr-noise"
    res = runner.invoke(
        prune_cmd,
        [
            "--model",
            str(tmp_path / "t"),
            "--score",
            "magnitude",
            "--sparsity",
            "0.25",
            "--window",
            "64",
            "--calib-windows",
            "2",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "removed 2 heads and 64 MLP channels" in res.output


def test_trainer_callbacks_apply_each_piece(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    from sazanami.training.callbacks import (
        ColoredLRCallback,
        EmbeddingNoiseCallback,
        GradientFilterCallback,
        GradientNoiseCallback,
    )

    model = checkpoints.trainable(models.load("tiny-random"))
    ids = torch.randint(0, 250, (8, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": r, "labels": r} for r in ids]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        data_seed=0,
    )
    lr_cb = ColoredLRCallback(Color(1.0, 0.5), seed=1)
    emb_cb = EmbeddingNoiseCallback(Color(1.0, 5.0), seed=2, max_batch=4, max_len=16)
    noise_cb = GradientNoiseCallback(Color(1.0, 1e-4), seed=3)
    filt_cb = GradientFilterCallback("ema", alpha=0.9, lamb=2.0)
    seen: list[float] = []

    class Spy(ColoredLRCallback.__mro__[1]):  # a plain TrainerCallback after ours: records the lr used
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kw):
            seen.append(optimizer.param_groups[0]["lr"])

    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():  # the Trainer seeds the global RNGs (set_seed); keep that inside the test
        Trainer(model=model, args=args, train_dataset=data, callbacks=[lr_cb, emb_cb, noise_cb, filt_cb, Spy()]).train()
    random.setstate(py_state)
    np.random.set_state(np_state)
    assert seen == pytest.approx([1e-3 * m for m in lr_cb.history])
    assert emb_cb.noise.step == 3 and noise_cb.piece.t == 3 and filt_cb.piece.steps == 3


def test_every_config_field_is_a_train_option() -> None:
    import dataclasses

    names = {p.name for p in train_cmd.params}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= names
