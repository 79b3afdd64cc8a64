"""The defaults table: every learning rule with its default settings (no per-model options) on
several architectures, from scratch and fine-tuning, test accuracy mean ± std over seeds.

Run: ``python benchmarks/learn_defaults.py [--epochs 15] [--ft-epochs 5] [--seeds 3]
[--archs mlp-narrow,cnn8] [--rules bp,lls] [--opt ff.theta=0.5]`` (``--opt`` overrides a rule
option or its lr for every architecture: how the defaults were swept; cnn16 is slower, so not
in the default set). About 5 minutes on 2 idle cores.

From scratch: torch's default initialisation (BN folded), then ``edgekit.finetune(g, x, y,
rule=r, epochs=15)``. Fine-tuning: the same network pretrained in torch (backprop, 10 epochs) on
the digits, then fine-tuned with each rule for 5 epochs on the digits shifted by one pixel down
and right (a moved sensor) and tested on the shifted test set; "pretrained" is its accuracy there
before fine-tuning. The deployed Graph is what is scored (for ff: its classifier head).
``ds-cnn`` is ``models.ds_cnn`` (stride-2 stem, two depthwise-separable residual blocks with
ReLU6, global pool) on 16x16 digits; ``kws`` is the MLPerf Tiny KWS DS-CNN (``zoo.ds_cnn_kws``,
16 filters instead of 64 to fit the CPU budget) on ``zoo.task("kws_ds_cnn")``, MFCC-shaped
49x10 inputs in 4 classes (1200 to train, 400 to test), shifted one frame and one coefficient
for fine-tuning. Both are slower: ``--archs ds-cnn,kws`` runs them.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import edgekit
from edgekit import data, models, zoo
from edgekit.console import table
from edgekit.learn import RULES
from edgekit.runtime import Executor


def narrow_mlp() -> nn.Module:
    """The issue's network: narrow layers, a leaky ReLU then a ReLU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 48), nn.LeakyReLU(0.01), nn.Linear(48, 32),
                         nn.ReLU(), nn.Linear(32, 10))


def kws_task() -> data.Dataset:
    """MFCC-shaped inputs of the zoo's small task for the KWS DS-CNN (4 classes)."""
    x, y = zoo.task("kws_ds_cnn", 1600, seed=0)
    return data.Dataset(x[:1200], y[:1200], x[1200:], y[1200:])


ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[[], data.Dataset]]] = {
    "mlp-narrow": (narrow_mlp, lambda: data.digits(16)),
    "mlp-128-64": (lambda: models.mlp(64, (128, 64)), lambda: data.digits(8)),
    "mlp-deep": (lambda: models.mlp(64, (32, 32, 32, 32)), lambda: data.digits(8)),
    "cnn8": (lambda: models.digits_cnn(8), lambda: data.digits(8)),
    "cnn16": (lambda: models.digits_cnn(16), lambda: data.digits(16)),
    "ds-cnn": (lambda: models.ds_cnn(16), lambda: data.digits(16)),
    "kws": (lambda: nn.Sequential(*list(zoo.ds_cnn_kws(zoo.TASK_CLASSES, filters=16))[:-1]),
            kws_task),  # its softmax left off: pretraining in torch reads the logits
}


def shifted(x: np.ndarray) -> np.ndarray:
    """The images moved one pixel down and right (zeros enter at the top and left)."""
    out = np.zeros_like(x)
    out[..., 1:, 1:] = x[..., :-1, :-1]
    return out


def accuracy(graph: edgekit.Graph, x: np.ndarray, y: np.ndarray) -> float:
    return float((Executor(graph).run(x).argmax(1) == y).mean())


def options(specs: list[str]) -> dict[str, dict[str, int | float | str]]:
    """``rule.key=value`` strings as {rule: {key: value}} (an int or float where it reads as
    one)."""
    out: dict[str, dict[str, int | float | str]] = {}
    for spec in specs:
        target, value = spec.split("=")
        rule, key = target.rsplit(".", 1)
        for kind in (int, float, str):
            try:
                out.setdefault(rule, {})[key] = kind(value)
                break
            except ValueError:
                continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--archs", default="mlp-narrow,mlp-128-64,mlp-deep,cnn8",
                    help=f"of {', '.join(ARCHS)}")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--opt", action="append", default=[])
    ap.add_argument("--no-finetune", dest="finetune", action="store_false")
    ap.add_argument("--no-scratch", dest="scratch", action="store_false")
    args = ap.parse_args()
    archs, rules, opts = args.archs.split(","), args.rules.split(","), options(args.opt)
    settings = ["scratch"] * args.scratch + ["finetune"] * args.finetune
    acc = {(s, r, a): [] for s in settings for r in rules for a in archs}
    before = {a: [] for a in archs}
    start = time.perf_counter()
    torch.set_num_threads(1)
    for arch in archs:
        build, dataset = ARCHS[arch]
        ds = dataset()
        x_shift, x_shift_test = shifted(ds.x_train), shifted(ds.x_test)
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = build().eval()
            scratch = edgekit.from_torch(net, (torch.from_numpy(ds.x_test[:1]),))
            net = models.train(copy.deepcopy(net), ds.x_train, ds.y_train, epochs=10, seed=seed)
            pretrained = edgekit.from_torch(net, (torch.from_numpy(ds.x_test[:1]),))
            before[arch].append(accuracy(pretrained, x_shift_test, ds.y_test))
            for rule in rules:
                kw = {"rule": rule, "seed": seed, **opts.get(rule, {})}
                if args.scratch:
                    tuned, _ = edgekit.finetune(scratch, ds.x_train, ds.y_train,
                                                epochs=args.epochs, **kw)
                    acc["scratch", rule, arch].append(accuracy(tuned, ds.x_test, ds.y_test))
                if args.finetune:
                    tuned, _ = edgekit.finetune(pretrained, x_shift, ds.y_train,
                                                epochs=args.ft_epochs, **kw)
                    acc["finetune", rule, arch].append(accuracy(tuned, x_shift_test, ds.y_test))
    lrs = ", ".join(f"{r} {RULES[r].lr:g}" for r in rules)
    print(f"digits, defaults of edgekit.finetune (AdamW, lr {lrs}; batch 32, cosine, norm off)"
          f"{' with ' + ' '.join(args.opt) if args.opt else ''}; from scratch {args.epochs} "
          f"epochs, fine-tuning {args.ft_epochs} epochs on shifted digits; seeds "
          f"0..{args.seeds - 1}; test accuracy % mean ± std (worst gap to bp over archs)")
    for setting in settings:
        rows = []
        if setting == "finetune":
            rows.append(["pretrained", *(_cell(before[a]) for a in archs), ""])
        for rule in rules:
            gaps = [np.mean(acc[setting, "bp", a]) - np.mean(acc[setting, rule, a])
                    for a in archs] if "bp" in rules else [0.0]
            rows.append([rule, *(_cell(acc[setting, rule, a]) for a in archs),
                         f"{100 * max(gaps):+.1f}"])
        print(f"\n{setting}")
        print(table([setting, *archs, "worst gap"], rows))
    print(f"({time.perf_counter() - start:.0f} s)")


def _cell(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


if __name__ == "__main__":
    main()
