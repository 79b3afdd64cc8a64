"""Below int8 on three networks: accuracy, model bytes and modelled energy per weight format.

    python benchmarks/low_bit.py [--only digits_cnn ds_cnn kws_ds_cnn] [--epochs 15]
                                 [--kws-steps 150] [--kws-test 512] [--qat-epochs 20]
                                 [--kws-qat-epochs 3] [--long-qat-epochs 60]
                                 [--kws-long-qat-epochs 6] [--bitnet-epochs 40]
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
  stored with ``scheme="mixed", formats=...``. ``ternary bitnet``: the same with the first
  and last layers kept float (stored float16, as BitNet keeps them in high precision),
  ``--bitnet-epochs`` (40) at lr 2e-3, no teacher (ds_cnn: 92.8 %; 30/40/50 epochs at lr 1e-3
  gave 78.8/90.8/90.0 %, 40 at 5e-4 82.5 %, 40 at 1e-3 with the teacher 86.6 %). KWS trains
  ``--kws-qat-epochs`` and ``--kws-long-qat-epochs`` instead (its epochs are 3x the digits'
  examples on a 30x larger net: the committed defaults run end to end in about an hour).
- ``int4_a8`` / ``ternary_a8``: int8 Graphs (int8 activations) whose conv/linear weights are
  int4 / ternary codes stored packed, what the microcontroller firmware runs (post-training,
  and ``... qat`` / ``... distil``: the QAT students above stored this way). ``flash``: the
  firmware image (``converters.to_c`` + ``firmware_bridge.build`` for the default core,
  ``elf_sizes``) of the int8, int4_a8 and ternary_a8 models, where arm-none-eabi-gcc is here.
- ``int8 acc16`` / ``int8 acc12``: the int8 model with every layer's rows bounded for a 16- or
  12-bit accumulator (``accumulators.fit_width``, A2Q: the static proof passes by
  construction) and run with that accumulator, saturating (``accumulators.narrow``):
  ``ptq`` from the float model, ``a2q`` after ``--qat-epochs`` of training those bounded
  int8 rows (``qat.train(scheme="int8", accumulator_bits=n)``, float teacher). Each row
  reports its overflows on the test set (values whose partial sums saturate) and the widest
  proven layer.

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
from edgekit.fileio import atomic_write_bytes
from edgekit.profile.counts import describe
from edgekit.profile.devices import load_profile
from edgekit.profile.energy import layer_energy_pj
from edgekit.quant import accumulators, qat
from edgekit.quant.lowbit import weight_names
from edgekit.runtime.executor import Executor
from edgekit.targets.mcu import elf_sizes

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
    accuracy = float((y.argmax(-1) == y_test).mean())
    print(f"  {label}: {100 * accuracy:.1f}%", flush=True)  # progress; the table follows
    return {"format": label, "accuracy": accuracy,
            "bytes": int(sum(graph.tensors[p].nbytes for p in graph.params)),
            "energy_uj": energy / 1e6, "seconds": round(time.time() - t, 1)}


def flash_bytes(graph) -> int | None:
    """The firmware image's flash for ``graph`` on the default core, or None without arm-gcc."""
    from edgekit.converters.to_c import generate
    from edgekit.firmware_bridge.build import build, toolchain_missing

    if toolchain_missing():
        return None
    return elf_sizes(build(*generate(graph)).elf)["flash_bytes"]


def narrow_rows(name: str, model, g, x, y, calib, xt, yt, device, epochs, probs) -> list[dict]:
    """The int8 model with 16- and 12-bit accumulators (A2Q rows), post-training and trained."""
    example = torch.from_numpy(xt[:1])
    int8 = edgekit.quantize(g, calib)
    rows = []
    for bits in (16, 12):
        student = qat.train(model, x, y, "int8", accumulator_bits=bits, epochs=epochs,
                            teacher=model, probabilities=probs)
        gs = edgekit.from_torch(student, example)
        for kind, (q, source) in {"ptq": (int8, g),
                                  "a2q": (edgekit.quantize(gs, calib), gs)}.items():
            fitted = accumulators.fit_width(q, source, bits)
            rows.append(row(f"int8 acc{bits} {kind}", accumulators.narrow(fitted, bits), xt, yt,
                            device))
            found = accumulators.overflows(fitted, xt, bits, batch=4)
            rows[-1].update(overflows=sum(c["saturate"] for c in found.values()),
                            values=sum(c["values"] for c in found.values()),
                            proven_bits=max(accumulators.required_bits(fitted).values()))
    return rows


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
    rows[1]["flash"] = flash_bytes(int8)
    for label in ("int4_a8", "ternary_a8"):
        q = edgekit.quantize(g, calib, scheme=label)
        rows.append(row(label, q, xt, yt, device))
        rows[-1]["flash"] = flash_bytes(q)
    long = args.kws_long_qat_epochs if name == "kws_ds_cnn" else args.long_qat_epochs
    epochs = args.kws_qat_epochs if name == "kws_ds_cnn" else args.qat_epochs
    int4 = next(r for r in rows if r["format"] == "int4")
    rows.append(row("mixed @int4", edgekit.quantize(g, calib, scheme="mixed",
                                                    size_bytes=int4["bytes"]), xt, yt, device))
    for scheme in ("ternary", "int4"):
        for teacher in (None, model):
            student = qat.train(model, x, y, scheme, epochs=epochs, teacher=teacher,
                                probabilities=probs)
            kind = "distil" if teacher is not None else "qat"
            gs = edgekit.from_torch(student, example)
            for stored in (scheme, f"{scheme}_a8"):
                rows.append(row(f"{stored} {kind}", edgekit.quantize(gs, calib, scheme=stored),
                                xt, yt, device))
    # BitNet-style: layers of at most 9 weights a row (a 3x3 kernel over one channel: the
    # first conv of a 1-channel input, depthwise convs) keep int4, the rest is ternary
    narrow = {n: "int4" for n in weight_names(g) if g.tensors[n].size // len(g.params[n]) <= 9}
    names = weight_names(g)
    bitnet = {**narrow, names[0]: "fp16", names[-1]: "fp16"}
    bitnet_epochs = args.kws_long_qat_epochs if name == "kws_ds_cnn" else args.bitnet_epochs
    for label, chosen, options in (("ternary+int4 dw", narrow, {"epochs": long}),
                                   ("ternary bitnet", bitnet, {"lr": 2e-3,
                                                               "epochs": bitnet_epochs})):
        student = qat.train(model, x, y, "ternary", formats=chosen, probabilities=probs,
                            **options)
        stored = {n: chosen.get(n, "ternary") for n in names}
        q = edgekit.quantize(edgekit.from_torch(student, example), calib, scheme="mixed",
                             formats=stored)
        rows.append(row(label, q, xt, yt, device))
    rows += narrow_rows(name, model, g, x, y, calib, xt, yt, device, epochs, probs)
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
    p.add_argument("--bitnet-epochs", type=int, default=40, help="the ternary bitnet row")
    p.add_argument("--kws-qat-epochs", type=int, default=3)
    p.add_argument("--kws-long-qat-epochs", type=int, default=6)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.only:
        rows += network(name, args)
        fp32 = next(r for r in rows if r["network"] == name and r["format"] == "fp32")
        print(f"\n{name}\n{'format':<18}{'accuracy':>9}{'vs fp32':>9}{'bytes':>9}"
              f"{'energy uJ':>11}{'flash':>9}")
        for r in rows:
            if r["network"] == name:
                extra = f"{r['flash']:>9,}" if r.get("flash") else ""
                if "overflows" in r:
                    extra = (f"  overflows {r['overflows']:,} of {r['values']:,}, proven "
                             f"<= {r['proven_bits']} bits")
                print(f"{r['format']:<18}{100 * r['accuracy']:>8.1f}%"
                      f"{100 * (r['accuracy'] - fp32['accuracy']):>+8.1f} {r['bytes']:>8,}"
                      f"{r['energy_uj']:>11.2f}{extra}", flush=True)
        layers = next(r for r in rows if r["network"] == name and r["format"] == "int8")
        print(f"int8 accumulators: {'layer':<24}{'proven bits':>12}  16-bit / 12-bit overflows "
              "(saturate, wrap) of values")
        for a in layers["accumulators"]:
            print(f"{'':<19}{a['layer'][:24]:<24}{a['proven_bits']:>12}  "
                  + " / ".join(f"{a[k]['saturate']}, {a[k]['wrap']} of {a[k]['values']}"
                               for k in ("16_bit", "12_bit")))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
