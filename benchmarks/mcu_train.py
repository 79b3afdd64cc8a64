"""Training on the microcontroller: a CNN's classifier fine-tuned on the emulated Cortex-M
boards (``edgekit.learn.board``), against the host learner on the same data.

The digits CNN (``models.digits_cnn(8)``) is trained with torch on upright digits; the task
then changes to mirrored digits (left-right), which its classifier reads wrongly while its
convolutions still find strokes. The classifier (64 -> 10, fp32 on the board) is fine-tuned on
each core over the frozen int8 backbone with backprop and the host learner's defaults (AdamW,
lr 1e-2, cosine, batch 32), then the board labels the mirrored test set. Printed per core:
test accuracy before and after (the board's own logits), the image's flash and RAM as built
and as the fit check counts them, the emulated instructions per training sample (int8 backbone
and float head: forward, backward and the update's share) and the largest difference between
the board's weights and the host learner's (``edgekit.learn.finetune``, bp, the same features,
order and hyper-parameters).

``--task kws``: MLPerf Tiny's KWS DS-CNN (64 filters, ``zoo.trained``: 40 Adam steps on
``zoo.task``'s synthetic keywords) has its classifier (64 -> 12) fine-tuned on 160 more
examples, 4 epochs, batch 16, and tested on 64: a deployed network's head trained on the board.

    python benchmarks/mcu_train.py [--task digits|kws] [--cores m3 m4 m7 m55] [--epochs N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def mirrored(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1])


def digits_task(epochs: int | None) -> tuple:
    """The digits CNN trained on upright digits; its head fine-tunes on mirrored ones."""
    import torch

    import edgekit
    from edgekit import data, models

    torch.manual_seed(0)
    ds = data.digits(8)
    net = models.train(models.digits_cnn(8), ds.x_train, ds.y_train, epochs=5)
    graph = edgekit.from_torch(torch.export.export(net.eval(), (torch.from_numpy(ds.x_test[:1]),)))
    with edgekit.deploy(graph, "cpu") as cpu:
        upright = float((cpu.run(ds.x_test).argmax(1) == ds.y_test).mean())
    title = (f"digits CNN 8x8 ({upright:.1%} on upright test digits), its head fine-tuned on "
             "600 mirrored digits")
    return (title, graph, mirrored(ds.x_train[:600]), ds.y_train[:600], mirrored(ds.x_test),
            ds.y_test, {"epochs": epochs or 3, "batch_size": 32})


def kws_task(epochs: int | None) -> tuple:
    """MLPerf Tiny's KWS DS-CNN, briefly trained; its head fine-tunes on more keywords."""
    import torch

    import edgekit
    from edgekit import zoo

    net = zoo.trained("kws_ds_cnn", steps=40).eval()
    shape = zoo.NETWORKS["kws_ds_cnn"].input_shape
    graph = edgekit.from_torch(torch.export.export(net, (torch.zeros(shape),)))
    x, y = zoo.task("kws_ds_cnn", 224, seed=5)
    return ("MLPerf Tiny KWS DS-CNN (zoo.task keywords), its head fine-tuned on 160 examples",
            graph, x[:160], y[:160], x[160:], y[160:], {"epochs": epochs or 4, "batch_size": 16})


def main() -> None:
    import torch

    import edgekit
    from edgekit.learn import board
    from edgekit.targets.mcu import elf_sizes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["digits", "kws"], default="digits")
    parser.add_argument("--cores", nargs="+", default=["m3", "m4", "m7", "m55"])
    parser.add_argument("--epochs", type=int, help="default: 3 (digits), 4 (kws)")
    parser.add_argument("--optimizer", choices=board.OPTIMIZERS, default="adam")
    args = parser.parse_args()
    torch.set_num_threads(1)
    title, graph, x, y, x_test, y_test, task = (digits_task if args.task == "digits"
                                                else kws_task)(args.epochs)
    hyper = {"lr": 1e-2, "seed": 0, "weight_decay": 0.0, "schedule": "cosine", **task}
    s = board.split(graph, x[:board.CALIBRATION_SAMPLES])
    reference, _ = board.host_reference(s, x, y, optimizer=args.optimizer, **hyper)
    print(f"{title}: head {' -> '.join(str(b.weight.shape[1]) for b in s.head)} -> "
          f"{s.head[-1].weight.shape[0]}, {hyper['epochs']} epochs, {args.optimizer}, "
          f"batch {hyper['batch_size']}")
    with edgekit.deploy(reference, "cpu") as cpu:
        host_after = float((cpu.run(board.features(s, x_test)).argmax(1) == y_test).mean())
    print(f"host learner (edgekit.learn bp, same features): test {host_after:.1%}")
    print("| core | test before | test after | flash built / counted | RAM built / counted | "
          "training buffers | instructions per training sample (backbone + head) | "
          "head inference | max abs weight diff vs host | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    xq, xq_test = board.quantized_inputs(s, x), board.quantized_inputs(s, x_test)
    for core in args.cores:
        start = time.perf_counter()
        with board.BoardHead(s, f"mcu:qemu:{core}", args.optimizer) as head:
            before = float((head.predict(xq_test)[0].argmax(1) == y_test).mean())
            history = board.train(head, xq, y, **hyper)
            logits, ticks = head.predict(xq_test)
            after = float((logits.argmax(1) == y_test).mean())
            diff = max(max(float(np.abs(w - reference.params[blk.weight_name]).max()),
                           float(np.abs(b - reference.params[blk.bias_name]).max()))
                       for blk, (w, b) in zip(s.head, head.weights(), strict=True))
            image = elf_sizes(head.firmware.elf)
            fp = head.footprint
            last = history[-1]
            infer = head.instructions(float(np.mean(ticks)))
        print(f"| {core} | {before:.1%} | {after:.1%} | {image['flash_bytes']:,} / "
              f"{fp.flash_bytes:,} | {image['ram_bytes']:,} / {fp.sram_bytes:,} | "
              f"{fp.training_bytes:,} | {last['backbone_instructions']:,.0f} + "
              f"{last['head_instructions']:,.0f} | {infer:,.0f} | {diff:.2e} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
