"""In-sensor front-ends swept over the first layer's stride and channels and the time steps T:
where a design lands in the paper's 12-96x bandwidth range and what accuracy it costs.

Run: ``python benchmarks/insensor.py [--data digits,photos,events] [--strides 2,4]
[--channels 4,8] [--timesteps 2,4] [--epochs 15] [--finetune-epochs 20] [--bayer]``.

Per data set (``edgekit.data.digits``, ``edgekit.sensor_data.photo_patches`` and
``digit_events``) and front-end (a ``stride`` x ``stride``-reaching convolution with
``channels`` outputs and its ReLU, then a fixed processor: 3x3 conv, ReLU, 2x2 average
pool, linear), the ANN is trained once (torch), converted per T as ``convert --to-snn`` does
(FAS, then surrogate-gradient fine-tuning on the first ``--finetune-samples`` labelled
training images), split after its first layer (``converters.insensor``; the pipeline is
checked equal to the unsplit SNN) and measured on the test split: bits per frame from its
spikes (per frame the shorter of bit-packed and address events) against a 12-bit ADC
readout, energy per frame with the host profile's coefficients (``edgekit.insensor``; the
sensor's are inferred), accuracy against the ANN on a conventional sensor.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from edgekit import data, models, sensor_data
from edgekit.console import table
from edgekit.converters.from_torch import from_torch
from edgekit.converters.snn import to_snn
from edgekit.converters.snn_finetune import finetune_snn
from edgekit.insensor import designs, measure, sensor_energy

DATA = {"digits": data.digits, "photos": sensor_data.photo_patches,
        "events": sensor_data.digit_events}


def frontend_cnn(in_channels: int, stride: int, channels: int, classes: int, size: int = 16,
                 width: int = 32) -> nn.Module:
    """The front-end (in the sensor after conversion) and a fixed processor, for ``size`` x
    ``size`` inputs."""
    kernel = max(3, stride)
    side = size // stride // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel, stride, (kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(width * side * side, classes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits,photos,events")
    ap.add_argument("--strides", default="2,4")
    ap.add_argument("--channels", default="4,8")
    ap.add_argument("--timesteps", default="2,4")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--finetune-samples", type=int, default=512,
                    help="labelled training images conversion calibrates and fine-tunes on")
    ap.add_argument("--size", type=int, default=16, help="image side (digits: 8, 16 or 28)")
    ap.add_argument("--adc-bits", type=int, default=12)
    ap.add_argument("--bayer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    energy = sensor_energy("host")
    rows = []
    for name in args.data.split(","):
        ds = DATA[name](args.size)
        in_ch, size = ds.x_train.shape[1], ds.x_train.shape[2]
        classes = int(ds.y_train.max()) + 1
        for stride in map(int, args.strides.split(",")):
            for channels in map(int, args.channels.split(",")):
                torch.manual_seed(0)
                net = models.train(frontend_cnn(in_ch, stride, channels, classes, size),
                                   ds.x_train, ds.y_train, epochs=args.epochs)
                ann = from_torch(net, torch.zeros(1, in_ch, size, size))
                for steps in map(int, args.timesteps.split(",")):
                    start = time.perf_counter()
                    x, y = (ds.x_train[:args.finetune_samples],
                            ds.y_train[:args.finetune_samples])
                    snn = to_snn(ann, x, steps, calibrate="fas", check=0)
                    if args.finetune_epochs:
                        snn = finetune_snn(snn, x, y, epochs=args.finetune_epochs)
                    m = measure(snn, ds.x_test, ds.y_test, ann=ann)
                    rs = {r["name"]: r for r in designs(m, energy, args.adc_bits, args.bayer)}
                    best = rs["in-sensor, adaptive"]
                    rows.append([name, stride, channels, steps,
                                 f"{100 * m.accuracy['ann']:.2f}",
                                 f"{100 * best['accuracy']:.2f}",
                                 f"{100 * best['accuracy_change']:+.2f}",
                                 f"{rs['conventional, ANN']['bits_per_frame']:,.0f}",
                                 f"{best['bits_per_frame']:,.0f}",
                                 f"{best['bandwidth_reduction']:.1f}",
                                 f"{rs['in-sensor, bit-packed']['bandwidth_reduction']:.1f}",
                                 f"{best['energy_reduction']:.2f}",
                                 f"{rs['conventional, SNN']['energy_reduction']:.2f}",
                                 f"{time.perf_counter() - start:.0f}"])
                    print(table(HEADER, rows[-1:]), flush=True)
    print()
    print(table(HEADER, rows))
    print(f"\nenergy coefficients (host profile): adc {energy.adc_fom_fj} fJ/step, link "
          f"{energy.link_pj_per_bit} pJ/bit, analog MAC {energy.analog_mac_pj} pJ, spike "
          f"{energy.spike_pj} pJ (all four inferred), MAC {energy.mac_pj} pJ, AC "
          f"{energy.ac_pj} pJ (Horowitz 45 nm)")


HEADER = ["data", "stride", "channels", "T", "ANN %", "in-sensor %", "change", "ADC bits",
          "bits/frame", "bandwidth x", "x bit-packed", "energy x", "x conv. SNN", "s"]


if __name__ == "__main__":
    main()
