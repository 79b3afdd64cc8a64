"""The multi-exit CTC encoder and its training, torch side (Wright et al. 2023, with 1-D
depthwise-separable convolution blocks in place of conformer layers).

Convolutional subsampling (x4 in time) feeds ``blocks`` residual blocks; after every
``exit_every`` blocks an exit (linear + log-softmax over the CTC classes, per frame) reads the
encoder. Training is from scratch on the unweighted sum of every exit's CTC loss, as the paper
found better than fine-tuning a trained backbone. The forward pass returns every exit's
(N, frames, CLASSES) log-posteriors, so ``edgekit.from_torch`` lowers all exits into one Graph.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgekit.speech import corpus, frontend
from edgekit.speech.ctc import CLASSES, encode, greedy, wer


class Block(nn.Module):
    """Depthwise conv (k taps, BN, ReLU), pointwise conv (BN, ReLU), dropout, residual."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels),
            nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EarlyExitCTC(nn.Module):
    """(N, MELS, FRAMES) log-mels in; a tuple of every exit's (N, FRAMES / 4, CLASSES)
    log-posteriors out, shallowest first."""

    def __init__(self, blocks: int = 12, exit_every: int = 2, channels: int = 64,
                 kernel: int = 9, mels: int = frontend.MELS, dropout: float = 0.1):
        super().__init__()
        if blocks < 1 or exit_every < 1 or blocks % exit_every:
            raise ValueError(f"blocks ({blocks}) must be a positive multiple of exit_every "
                             f"({exit_every})")
        self.exit_every = exit_every
        self.subsample = nn.Sequential(
            nn.Conv1d(mels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1, groups=channels),
            nn.Conv1d(channels, channels, 1), nn.BatchNorm1d(channels), nn.ReLU())
        self.blocks = nn.ModuleList(Block(channels, kernel, dropout) for _ in range(blocks))
        self.exits = nn.ModuleList(nn.Linear(channels, CLASSES)
                                   for _ in range(blocks // exit_every))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.subsample(x)
        outs = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if (i + 1) % self.exit_every == 0:
                head = self.exits[len(outs)]
                outs.append(torch.log_softmax(head(h.transpose(1, 2)), dim=-1))
        return tuple(outs)


@dataclass
class TrainConfig:
    blocks: int = 12
    exit_every: int = 2
    channels: int = 64
    train_utterances: int = 2000
    valid_utterances: int = 300  # calibrate the policy on these (validation voices)
    epochs: int = 30
    minutes: float | None = None  # a wall-clock budget; the schedule follows whichever ends first
    batch: int = 32
    lr: float = 3e-3
    seed: int = 0
    single_exit: bool = False  # train only the last exit (the baseline of the same depth)


def training_features(cfg: TrainConfig, cache=None) -> tuple[np.ndarray, list[str]]:
    """Two copies of the training clips: clean, and with noise (white and babble in turn) at
    an SNR drawn uniformly in [0, 30] dB per clip: the noise the model must tolerate."""
    clips = corpus.utterances("train", cfg.train_utterances, cfg.seed, cache=cache)
    rng = np.random.default_rng([cfg.seed, 1])
    pool = corpus.babble_pool(cfg.seed, cache)
    noisy = [corpus.add_noise(u.audio, rng.uniform(0, 30), rng, pool if i % 2 else None)
             for i, u in enumerate(clips)]
    return frontend.batch([u.audio for u in clips] + noisy), [u.text for u in clips] * 2


def train(cfg: TrainConfig, cache=None, log=print) -> EarlyExitCTC:
    """A model trained from scratch on the summed CTC losses of its exits (``cfg``)."""
    torch.manual_seed(cfg.seed)
    start = time.monotonic()
    x, texts = training_features(cfg, cache)
    targets = [torch.from_numpy(encode(t)) for t in texts]
    model = EarlyExitCTC(cfg.blocks, cfg.exit_every, cfg.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    steps_per_epoch = math.ceil(len(x) / cfg.batch)
    total, step = cfg.epochs * steps_per_epoch, 0
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    gen = torch.Generator().manual_seed(cfg.seed)
    progress = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total_loss = 0.0
        for lo in range(0, len(x), cfg.batch):
            idx = order[lo:lo + cfg.batch]
            outs = model(torch.from_numpy(x[idx.numpy()]))
            tgt = [targets[i] for i in idx]
            lens = torch.tensor([len(t) for t in tgt])
            frames = torch.full((len(idx),), outs[0].shape[1], dtype=torch.long)
            losses = [ctc(o.transpose(0, 1), torch.cat(tgt), frames, lens) for o in outs]
            loss = losses[-1] if cfg.single_exit else sum(losses)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            # cosine decay over the steps or the time budget, whichever runs out first
            step += 1
            progress = step / total
            if budget:
                progress = max(progress, (time.monotonic() - start) / budget)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            opt.step()
            total_loss += loss.item()
            if progress >= 1.0:
                break
        log(f"epoch {epoch + 1}: loss {total_loss / steps_per_epoch:.3f} "
            f"({time.monotonic() - start:.0f} s)")
        if progress >= 1.0:
            break
    return model.eval()


def exit_wers(model: EarlyExitCTC, x: np.ndarray, texts: list[str]) -> list[float]:
    """WER of every exit of the torch model on features ``x``."""
    with torch.no_grad():
        outs = model(torch.from_numpy(x))
    return [wer(texts, [greedy(o) for o in out.numpy()]) for out in outs]
