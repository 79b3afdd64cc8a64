"""Bandwidth, energy and accuracy of in-sensor SNN front-ends (Datta et al., ICASSP 2023), and
the ``edgekit insensor`` command that prints them as the paper's table.

A design is a way of getting a frame from the pixel array to the processor and through the
network. Conventional: every pixel read by a b-bit ADC and sent, then the network on the
processor (the ANN, or the SNN with its dense first layer). In-sensor
(``converters.insensor``): the first convolution and its neurons in the pixel array, spikes sent
bit-packed (T x neurons bits), as address events, or per frame whichever is shorter; the rest
of the SNN on the processor as accumulates. Bits per frame are measured from the sensor's spikes
on the data; energy per frame is

- conventional: ``samples * E_adc(b) + samples * b * E_link + MACs * E_MAC`` (ANN), or
  ``... + first-layer MACs * E_MAC + SOPs * E_AC`` (SNN processor);
- in-sensor: ``first-layer MACs * E_analog + neurons * T * E_spike + bits * E_link + SOPs *
  E_AC`` (SOPs of the processor, counted by the runtime on the data),

with ``samples = H * W * C`` pixel values (times the Bayer factor 4/3 with ``bayer``, the
factor of the paper's family of work: **inferred**), ``E_adc(b) = FoM * 2^b``. ``E_MAC`` and
``E_AC`` are the device profile's ``energy_pj`` (``mac_float32``, ``add_float32``); the sensor's
coefficients are its ``[insensor]`` table, each with its source there (all four are inferred
and say so).
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph

BAYER = 4 / 3  # inferred: the Bayer-pattern factor of the paper's family of work
COEFFICIENTS = ("adc_fom_fj", "link_pj_per_bit", "analog_mac_pj", "spike_pj")


@dataclass(frozen=True)
class SensorEnergy:
    """The energy model's coefficients (pJ unless named) and where each comes from."""

    adc_fom_fj: float
    link_pj_per_bit: float
    analog_mac_pj: float
    spike_pj: float
    mac_pj: float
    ac_pj: float
    sources: dict[str, str]

    def adc_pj(self, bits: int) -> float:
        return self.adc_fom_fj * 2 ** bits / 1000


def sensor_energy(profile: str | Path = "host") -> SensorEnergy:
    """The coefficients of a device profile (a name or a ``.toml`` path): its ``[insensor]``
    table and its processor's ``energy_pj``."""
    from edgekit.profile.devices import _profile_dir, load_profile

    device = load_profile(profile)
    path = Path(profile) if str(profile).endswith(".toml") else \
        _profile_dir() / f"{profile}.toml"
    table = tomllib.loads(path.read_text("utf-8")).get("insensor")
    if not isinstance(table, dict) or any(
            not isinstance(table.get(k), (int, float)) or table[k] < 0 for k in COEFFICIENTS):
        raise EdgekitError(f"device profile {device.name!r} has no complete [insensor] table "
                           f"({', '.join(COEFFICIENTS)}, non-negative numbers, as in host.toml)")
    sources = table.get("sources", {})
    return SensorEnergy(*(float(table[k]) for k in COEFFICIENTS),
                        device.energy_pj["mac_float32"], device.energy_pj["add_float32"],
                        {**{k: str(v) for k, v in sources.items()},
                         "mac_pj, ac_pj": device.sources.get("horowitz", device.name)})


@dataclass
class Measured:
    """One data set through the split SNN: per frame, the bits of each encoding and the
    processor's SOPs; the counts that do not depend on the frame; the accuracies."""

    packed_bits: int  # T x neurons at the cut
    event_bits: np.ndarray
    sops: float  # processor synaptic operations per frame, mean
    samples: int  # pixel values per frame (H x W x C)
    first_macs: int
    rest_macs: int  # the ANN's MACs after the first layer
    neurons_steps: int  # sensor neurons x T
    snn_sops: float  # the unsplit SNN's SOPs per frame (its event-driven layers)
    accuracy: dict[str, float]


def measure(snn: Graph, x: np.ndarray, y: np.ndarray | None, k: int = 1,
            ann: Graph | None = None, targets: tuple[str, ...] = ()) -> Measured:
    """Split ``snn`` after layer ``k``, run frames ``x`` through the pipeline, and count.

    The pipeline's outputs are checked equal to the unsplit SNN's (and to the processor's on
    each of ``targets``); a difference is an ``EdgekitError``."""
    from edgekit.converters.insensor import split, transfer
    from edgekit.runtime import Executor, SpikingExecutor
    from edgekit.targets import deploy

    s = split(snn, k)
    x = np.asarray(x, np.float32)
    sent = transfer(s, x)
    whole = SpikingExecutor(snn).run(x)
    _, sops = SpikingExecutor(s.processor).record(sent.currents)
    outputs = {"cpu": SpikingExecutor(s.processor).run(sent.currents)}
    for target in targets:
        with deploy(s.processor, target=target) as session:
            outputs[target] = session.run(sent.currents)
    for target, out in outputs.items():
        if not np.array_equal(out, whole if target == "cpu" else _unsplit(snn, x, target)):
            raise EdgekitError(f"the split pipeline's outputs on {target} differ from the "
                               "unsplit Graph's")
    first = [n for n in s.sensor.nodes if n.op not in ("if_neuron", "lif_neuron")]
    first_macs = sum(snn.node_macs(n) for n in first)
    rest = ann if ann is not None else snn
    all_macs = sum(rest.node_macs(n) for n in rest.nodes)
    _, snn_sops = SpikingExecutor(snn).record(x)
    accuracy = {}
    if y is not None:
        accuracy["snn"] = float(np.mean(whole.argmax(1) == y))
        accuracy["insensor"] = float(np.mean(outputs["cpu"].argmax(1) == y))
        if ann is not None:
            accuracy["ann"] = float(np.mean(Executor(ann).run(x).argmax(1) == y))
    return Measured(sent.packed_bits, sent.event_bits, sum(sops) / len(x),
                    math.prod(snn.tensors[snn.inputs[0]].shape[1:]),
                    first_macs, all_macs - first_macs, s.neurons * snn.metadata["timesteps"],
                    sum(snn_sops) / len(x), accuracy)


def _unsplit(snn: Graph, x: np.ndarray, target: str) -> np.ndarray:
    from edgekit.targets import deploy

    with deploy(snn, target=target) as session:
        return session.run(x)


def designs(m: Measured, e: SensorEnergy, adc_bits: int = 12, bayer: bool = False
            ) -> list[dict[str, Any]]:
    """The table's rows: per design its bits and energy per frame, reductions against the
    first row (the conventional sensor with the ANN, or with the SNN when there is no ANN),
    accuracy and its change against that row."""
    samples = m.samples * (BAYER if bayer else 1)
    readout = samples * (e.adc_pj(adc_bits) + adc_bits * e.link_pj_per_bit)
    rows = []
    if "ann" in m.accuracy or not m.accuracy:
        rows.append(("conventional, ANN", samples * adc_bits,
                     readout + (m.first_macs + m.rest_macs) * e.mac_pj, m.accuracy.get("ann")))
    snn_rest = m.snn_sops * e.ac_pj
    rows.append(("conventional, SNN", samples * adc_bits,
                 readout + m.first_macs * e.mac_pj + snn_rest, m.accuracy.get("snn")))
    sensor = m.first_macs * e.analog_mac_pj + m.neurons_steps * e.spike_pj
    rest = m.sops * e.ac_pj
    adaptive = np.minimum(m.event_bits, m.packed_bits)
    for name, bits in (("in-sensor, bit-packed", np.full(len(m.event_bits), m.packed_bits)),
                       ("in-sensor, address events", m.event_bits),
                       ("in-sensor, adaptive", adaptive)):
        mean = float(bits.mean())
        rows.append((name, mean, sensor + mean * e.link_pj_per_bit + rest,
                     m.accuracy.get("insensor")))
    base_bits, base_energy, base_acc = rows[0][1], rows[0][2], rows[0][3]
    out = []
    for name, bits, energy, acc in rows:
        out.append({"name": name, "bits_per_frame": round(float(bits), 1),
                    "bandwidth_reduction": base_bits / bits if bits else math.inf,
                    "energy_pj_per_frame": round(energy, 1),
                    "energy_reduction": base_energy / energy,
                    "accuracy": acc,
                    "accuracy_change": None if acc is None or base_acc is None
                    else acc - base_acc})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    from edgekit.console import table as render

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    def change(v):
        return "-" if v is None else f"{100 * v:+.2f}"

    return render(["design", "bits/frame", "bandwidth x", "energy nJ", "energy x",
                   "accuracy %", "change"],
                  [(r["name"], f"{r['bits_per_frame']:,.0f}", f"{r['bandwidth_reduction']:.2f}",
                    f"{r['energy_pj_per_frame'] / 1000:.2f}", f"{r['energy_reduction']:.2f}",
                    pct(r["accuracy"]), change(r["accuracy_change"])) for r in rows])


# --------------------------------------------------------------------------- the command


def add_parser(sub: Any) -> None:
    p = sub.add_parser("insensor", help="split an SNN between sensor and processor: bandwidth, "
                       "energy, accuracy")
    p.add_argument("model", help="a float ANN (.pt2/.onnx/.ekm), converted at --timesteps, or "
                   "a spiking .ekm")
    p.add_argument("--split", type=int, default=1, help="neuron layers in the sensor (1)")
    p.add_argument("--timesteps", type=int, help="T (an ANN is converted; default 8)")
    p.add_argument("--adc-bits", type=int, default=12, help="conventional readout's ADC bits")
    p.add_argument("--bayer", action="store_true", help="conventional readout of a Bayer "
                   "mosaic (x4/3, inferred)")
    p.add_argument("--data", required=True, help=".npz with 'x' (and labels 'y')")
    p.add_argument("--calibration-data", help=".npz the ANN is converted on (default: --data)")
    p.add_argument("--profile", default="host", help="device profile with an [insensor] table")
    p.add_argument("--json", metavar="OUT.json", help="write the designs as JSON")
    p.set_defaults(func=cmd_insensor)


def cmd_insensor(args: argparse.Namespace) -> None:
    from edgekit.cli import load_data, load_model
    from edgekit.fileio import atomic_write_bytes, check_file
    from edgekit.spiking import is_spiking

    if not 1 <= args.adc_bits <= 24:
        raise EdgekitError(f"--adc-bits is 1..24, got {args.adc_bits}")
    if args.json:
        check_file(Path(args.json), (args.model, args.data))
    energy = sensor_energy(args.profile)
    graph = load_model(args.model)
    x, y = load_data(args.data)
    ann = None
    if is_spiking(graph):
        if args.timesteps not in (None, graph.metadata["timesteps"]):
            raise EdgekitError(f"{args.model} is a spiking Graph of T = "
                               f"{graph.metadata['timesteps']}; drop --timesteps or convert "
                               "the ANN")
        snn = graph
    else:
        from edgekit.converters.snn import to_snn

        ann = graph  # converted as convert --to-snn does: FAS, fine-tuned given labels
        cx, cy = load_data(args.calibration_data) if args.calibration_data else (x, None)
        snn = to_snn(ann, cx, args.timesteps or 8, calibrate="fas", check=0)
        if cy is not None:
            from edgekit.converters.snn_finetune import finetune_snn

            snn = finetune_snn(snn, cx, cy)
    rows = designs(measure(snn, x, y, args.split, ann), energy, args.adc_bits, args.bayer)
    print(table(rows))
    print(f"energy: {', '.join(f'{k} {getattr(energy, k)}' for k in COEFFICIENTS)} "
          f"({args.profile} profile, [insensor]: inferred, see its sources); E_MAC "
          f"{energy.mac_pj} pJ, E_AC {energy.ac_pj} pJ")
    if args.json:
        report = {"model": str(args.model), "split": args.split,
                  "timesteps": snn.metadata["timesteps"], "adc_bits": args.adc_bits,
                  "bayer": args.bayer, "frames": len(x), "designs": rows,
                  "coefficients": {k: getattr(energy, k) for k in
                                   (*COEFFICIENTS, "mac_pj", "ac_pj")},
                  "sources": energy.sources}
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
