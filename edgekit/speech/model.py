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


class ConformerBlock(nn.Module):
    """A small conformer layer (Gulati et al. 2020) in the ops edgekit lowers: half-step
    feed-forward (SiLU), multi-head self-attention written out per head (linear, slice, matmul,
    softmax, concat; ``nn.MultiheadAttention`` does not lower), the convolution module
    (pointwise to 2C, GLU, depthwise k, BN, SiLU, pointwise), half-step feed-forward, each
    with a residual, then LayerNorm. (N, C, T) in and out, like ``Block``."""

    def __init__(self, channels: int, kernel: int, dropout: float, heads: int = 2):
        super().__init__()
        c = channels
        self.heads = heads
        self.ff1, self.ff2 = (nn.Sequential(nn.LayerNorm(c), nn.Linear(c, 2 * c), nn.SiLU(),
                                            nn.Dropout(dropout), nn.Linear(2 * c, c))
                              for _ in range(2))
        self.norm_att, self.norm_conv, self.norm = nn.LayerNorm(c), nn.LayerNorm(c), \
            nn.LayerNorm(c)
        self.qkv, self.out = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.pw1 = nn.Conv1d(c, 2 * c, 1)
        self.dw = nn.Conv1d(c, c, kernel, padding=kernel // 2, groups=c)
        self.bn, self.pw2 = nn.BatchNorm1d(c), nn.Conv1d(c, c, 1)
        self.drop = nn.Dropout(dropout)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        c = h.shape[-1]
        d = c // self.heads
        q, k, v = self.qkv(h).split(c, dim=-1)
        heads = [torch.softmax(q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d]
                               .transpose(1, 2) / d ** 0.5, dim=-1) @ v[..., i * d:(i + 1) * d]
                 for i in range(self.heads)]
        return self.out(torch.cat(heads, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (N, T, C)
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.attend(self.norm_att(x)))
        h = nn.functional.glu(self.pw1(self.norm_conv(x).transpose(1, 2)), dim=1)
        h = self.pw2(nn.functional.silu(self.bn(self.dw(h))))
        x = x + self.drop(h.transpose(1, 2))
        x = x + 0.5 * self.ff2(x)
        return self.norm(x).transpose(1, 2)


BLOCKS = {"dsconv": Block, "conformer": ConformerBlock}


class EarlyExitCTC(nn.Module):
    """(N, MELS, FRAMES) log-mels in; a tuple of every exit's (N, FRAMES / 4, CLASSES)
    log-posteriors out, shallowest first."""

    def __init__(self, blocks: int = 12, exit_every: int = 2, channels: int = 64,
                 kernel: int = 9, mels: int = frontend.MELS, dropout: float = 0.1,
                 block: str = "dsconv"):
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
        self.blocks = nn.ModuleList(BLOCKS[block](channels, kernel, dropout)
                                    for _ in range(blocks))
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
    block: str = "dsconv"  # or "conformer" (BLOCKS)


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
    model = EarlyExitCTC(cfg.blocks, cfg.exit_every, cfg.channels, block=cfg.block)
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
