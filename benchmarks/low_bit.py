"""Below int8 on three networks: accuracy, model bytes and modelled energy per weight format.

    python benchmarks/low_bit.py [--only digits_cnn ds_cnn kws_ds_cnn] [--epochs 15]
                                 [--kws-steps 150] [--kws-test 512] [--qat-epochs 20]
                                 [--json out.json]

Networks: ``edgekit.models.digits_cnn`` and ``ds_cnn`` trained on the bundled 16x16 digits
(1,437 train, 360 test), and the MLPerf Tiny keyword-spotting DS-CNN (``edgekit.zoo``,
``kws_ds_cnn``, 1 x 49 x 10 inputs) trained for ``--kws-steps`` Adam steps on ``zoo.task`` and
tested on ``--kws-test`` (512) held-out examples of it. Each float model goes through
``edgekit.from_torch``; every row is then a Graph run by edgekit's runtime on the test set:

- ``fp32``: the float Graph; ``int8``: ``edgekit.quantize`` (min/max over 256 training
  inputs; int8 activations too); ``fp16``, ``fp8_e4m3``, ``fp8_e5m2``, ``int4`` (per output
  channel), ``int4 g16`` (a scale per 16 weights), ``int4 rex2`` (REx, two orders) and
  ``ternary``: post-training, weights only (float32 activations). ``mixed @int4``: a format
  per layer (``edgekit.quant.mixed``'s sensitivity search) within the int4 row's bytes.
- ``ternary qat`` / ``int4 qat``: the float model fine-tuned ``--qat-epochs`` with its weights
  fake-quantized (straight-through; ``edgekit.quant.qat``, Adam lr 3e-3, cosine), then
  quantized as above; ``... distil``: the same with the float model as teacher (T = 4,
  alpha = 0.5). ``ternary+int4 dw``: QAT for ``--long-qat-epochs`` with the layers of at most
  9 weights a row (a one-channel first conv, depthwise convs) in int4 and the rest ternary,
  stored with ``scheme="mixed", formats=...``.

``bytes``: every param as stored (packed weights and their float32 scales, float32 biases).
The int8 model's accumulators (``edgekit.quant.accumulators``): per layer the width its weights
and input range prove enough, and how many output values' sums overflow a 16- or 12-bit
accumulator on the test set, saturating (any partial sum) or wrapping (the final sum); where
none do, that width computes the int32 result exactly.

``energy uJ``: ``edgekit.profile``'s model on the cortex-m4 profile (MACs at their dtype's
cost, each weight byte fetched once from flash, activations from SRAM); weight-only formats
still multiply in float32, so they save the weight fetches only.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import edgekit
from edgekit import data, models, zoo
from edgekit.profile.counts import describe
from edgekit.profile.devices import load_profile
from edgekit.profile.energy import layer_energy_pj
from edgekit.quant import accumulators, qat
from edgekit.quant.lowbit import weight_names
from edgekit.runtime.executor import Executor

DEVICE = "cortex-m4"
PTQ = [("fp16", {}), ("fp8_e4m3", {}), ("fp8_e5m2", {}), ("int4", {}),
       ("int4 g16", {"group_size": 16}), ("int4 rex2", {"rex": 2}), ("ternary", {})]


def dataset(name: str, args) -> tuple:
    """(float model, x_train, y_train, x_test, y_test, softmax-ended)."""
    torch.manual_seed(0)
    if name == "kws_ds_cnn":
        x, y = zoo.task(name, args.kws_steps * 32, seed=100)
        xt, yt = zoo.task(name, args.kws_test, seed=999)
        return zoo.trained(name, steps=args.kws_steps), x, y, xt, yt, True
    ds = data.digits(16)
    net = {"digits_cnn": models.digits_cnn, "ds_cnn": models.ds_cnn}[name](16)
    net = models.train(net, ds.x_train, ds.y_train, epochs=args.epochs)
    return net, ds.x_train, ds.y_train, ds.x_test, ds.y_test, False


def row(label: str, graph, x_test, y_test, device) -> dict:
    t = time.time()
    y = Executor(graph).run(x_test)
    counts = describe(graph, device)
    energy = sum(sum(layer_energy_pj(la, device).values()) for la in counts["layers"])
    return {"format": label, "accuracy": float((y.argmax(-1) == y_test).mean()),
            "bytes": int(sum(graph.tensors[p].nbytes for p in graph.params)),
            "energy_uj": energy / 1e6, "seconds": round(time.time() - t, 1)}


def network(name: str, args) -> list[dict]:
    model, x, y, xt, yt, probs = dataset(name, args)
    model.eval()
    example = torch.from_numpy(xt[:1])
    g = edgekit.from_torch(model, example)
    calib = x[:256]
    device = load_profile(DEVICE)
    int8 = edgekit.quantize(g, calib)
    rows = [row("fp32", g, xt, yt, device), row("int8", int8, xt, yt, device)]
    rows[-1]["accumulators"] = accumulators.summary(int8, xt)
    for label, options in PTQ:
        rows.append(row(label, edgekit.quantize(g, calib, scheme=label.split()[0], **options),
                        xt, yt, device))
    int4 = next(r for r in rows if r["format"] == "int4")
    rows.append(row("mixed @int4", edgekit.quantize(g, calib, scheme="mixed",
                                                    size_bytes=int4["bytes"]), xt, yt, device))
    for scheme in ("ternary", "int4"):
        for teacher in (None, model):
            student = qat.train(model, x, y, scheme, epochs=args.qat_epochs, teacher=teacher,
                                probabilities=probs)
            q = edgekit.quantize(edgekit.from_torch(student, example), calib, scheme=scheme)
            rows.append(row(f"{scheme} {'distil' if teacher is not None else 'qat'}", q, xt,
                            yt, device))
    # BitNet-style: layers of at most 9 weights a row (a 3x3 kernel over one channel: the
    # first conv of a 1-channel input, depthwise convs) keep int4, the rest is ternary
    narrow = {n: "int4" for n in weight_names(g) if g.tensors[n].size // len(g.params[n]) <= 9}
    student = qat.train(model, x, y, "ternary", epochs=args.long_qat_epochs, formats=narrow,
                        probabilities=probs)
    chosen = {n: narrow.get(n, "ternary") for n in weight_names(g)}
    q = edgekit.quantize(edgekit.from_torch(student, example), calib, scheme="mixed",
                         formats=chosen)
    rows.append(row("ternary+int4 dw", q, xt, yt, device))
    for r in rows:
        r["network"] = name
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=["digits_cnn", "ds_cnn", "kws_ds_cnn"])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--kws-steps", type=int, default=150)
    p.add_argument("--kws-test", type=int, default=512, help="held-out KWS examples")
    p.add_argument("--qat-epochs", type=int, default=20)
    p.add_argument("--long-qat-epochs", type=int, default=60, help="the ternary+int4 dw row")
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.only:
        rows += network(name, args)
        fp32 = next(r for r in rows if r["network"] == name and r["format"] == "fp32")
        print(f"\n{name}\n{'format':<16}{'accuracy':>9}{'vs fp32':>9}{'bytes':>9}"
              f"{'energy uJ':>11}")
        for r in rows:
            if r["network"] == name:
                print(f"{r['format']:<16}{100 * r['accuracy']:>8.1f}%"
                      f"{100 * (r['accuracy'] - fp32['accuracy']):>+8.1f} {r['bytes']:>8,}"
                      f"{r['energy_uj']:>11.2f}", flush=True)
        layers = next(r for r in rows if r["network"] == name and r["format"] == "int8")
        print(f"int8 accumulators: {'layer':<24}{'proven bits':>12}  16-bit / 12-bit overflows "
              "(saturate, wrap) of values")
        for a in layers["accumulators"]:
            print(f"{'':<19}{a['layer'][:24]:<24}{a['proven_bits']:>12}  "
                  + " / ".join(f"{a[k]['saturate']}, {a[k]['wrap']} of {a[k]['values']}"
                               for k in ("16_bit", "12_bit")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
