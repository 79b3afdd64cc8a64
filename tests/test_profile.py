"""edgekit.profile: MAC counts against thop layer by layer, peak memory against the executor's
real arena, latency statistics from real runs, energy labels, fit errors, JSON schema, plots,
the CLI, and the comparison with its Pareto front."""

import dataclasses
import functools
import inspect
import json
import re
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

import edgekit
from edgekit import cli, models
from edgekit.profile import check_fit, load_profile, profile, profile_names, require_fit
from edgekit.profile.compare import pareto_front
from edgekit.profile.energy import RaplMeter, meter_for
from edgekit.profile.report import validate
from edgekit.runtime import Executor

torch = pytest.importorskip("torch")
thop_rules = pytest.importorskip("thop.profile").register_hooks
nn = torch.nn

INPUT_SHAPES = {"mlp": (1, 1, 8, 8)}  # builders not listed take 16x16 one-channel images


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, skip if same."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()] \
            if expand != 1 else []
        self.conv = nn.Sequential(
            *layers,
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


def mobilenet_v2_style(classes: int = 10) -> nn.Module:
    """A width-reduced MobileNetV2 for 3x32x32 inputs (torchvision does not import here)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 2, 6),
        InvertedResidual(24, 24, 1, 6), InvertedResidual(24, 32, 2, 6),
        nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, classes))


def builders():
    """Every model builder in edgekit.models: functions returning an nn.Module that need no
    arguments (``train`` returns one too, but takes one)."""
    def builds(fn):
        sig = inspect.signature(fn)
        return sig.return_annotation in ("nn.Module", nn.Module) and all(
            p.default is not p.empty for p in sig.parameters.values())

    found = {name: fn for name, fn in vars(models).items()
             if inspect.isfunction(fn) and fn.__module__ == models.__name__ and builds(fn)}
    assert {"digits_cnn", "mlp", "ds_cnn"} <= set(found)
    return found


NETS = {**{name: (fn, INPUT_SHAPES.get(name, (1, 1, 16, 16))) for name, fn in builders().items()},
        "mobilenet_v2_style": (mobilenet_v2_style, (1, 3, 32, 32))}


def thop_per_module(net: nn.Module, x) -> dict[str, int]:
    """thop's count for every leaf module by its path, with thop's own rules (its hooks)."""
    counts, hooks = {}, []
    for path, module in net.named_modules():
        rule = thop_rules.get(type(module))
        if rule is None or list(module.children()):
            continue
        module.register_buffer("total_ops", torch.zeros(1, dtype=torch.float64))
        hooks.append(module.register_forward_hook(rule))
        counts[path] = module
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return {path: int(m.total_ops.item()) for path, m in counts.items()}


def lower(net: nn.Module, shape):
    x = torch.randn(shape)
    return edgekit.from_torch(torch.export.export(net.eval(), (x,))), x


@pytest.fixture(scope="module")
def graphs():
    torch.manual_seed(0)
    return {name: lower(fn(), shape) + (fn,) for name, (fn, shape) in NETS.items()}


@pytest.mark.parametrize("name", sorted(NETS))
def test_macs_match_thop_layer_by_layer(name):
    """Equal per layer, with two documented per-op differences: thop counts BatchNorm
    (2 ops per element, x2 when affine) where edgekit has folded it into the convolution (0),
    and thop adds one division per output to adaptive average pooling, which edgekit counts
    as the additions only (one per input element)."""
    torch.manual_seed(0)
    fn, shape = NETS[name]
    net = fn().eval()
    graph, x = lower(net, shape)
    theirs = thop_per_module(net, x)
    modules = dict(net.named_modules())
    covered = set()
    for node in graph.nodes:
        ours = graph.node_macs(node)
        if node.name not in theirs:  # functional ops (residual add, flatten): no module
            assert ours == 0, (node.op, node.name)
            continue
        covered.add(node.name)
        expected = theirs[node.name]
        if isinstance(modules[node.name], nn.AdaptiveAvgPool2d):
            expected -= graph.tensors[node.outputs[0]].size  # thop's division per output
        assert ours == expected, (node.op, node.name, ours, theirs[node.name])
    for path, count in theirs.items():
        if path not in covered and count:
            assert isinstance(modules[path], nn.BatchNorm2d), (path, count)  # folded away


@pytest.fixture(scope="module")
def ds_graph(graphs):
    return graphs["ds_cnn"][0]


def test_peak_activation_bytes_is_what_the_executor_allocates(graphs):
    for name, (graph, x, _) in graphs.items():
        report = profile(graph, "cpu", x.numpy(), runs=3, warmup=1, per_layer=False)
        executor = Executor(graph)
        executor.run(x.numpy())
        allocated = executor.program(1).arena.nbytes
        t = report["totals"]
        assert t["peak_activation_bytes"] == allocated, name
        activations = sum(info.nbytes for n, info in graph.tensors.items()
                          if n not in graph.params)
        # naive: every activation and kernel scratch buffer (im2row) in its own bytes
        assert activations <= t["naive_activation_bytes"], name
        assert t["peak_activation_bytes"] < t["naive_activation_bytes"], name


def test_counts_totals_and_labels(ds_graph, int8_graph):
    r = profile(ds_graph, "cpu", runs=5, warmup=1)
    t = r["totals"]
    assert t["flops"] == 2 * t["macs"] == 2 * sum(la["macs"] for la in r["layers"])
    assert t["params"] == sum(v.size for v in ds_graph.params.values())
    assert t["weight_bytes_by_dtype"] == {"float32": t["weight_bytes"]}
    assert len(r["layers"]) == len(ds_graph.nodes)
    assert any("inferred" in note for note in r["notes"])  # says which intensity it is
    rq = profile(int8_graph, "cpu", runs=5, warmup=1, per_layer=False)
    assert set(rq["totals"]["weight_bytes_by_dtype"]) == {"int8", "int32"}
    assert rq["totals"]["macs"] == t["macs"]
    assert rq["energy"]["model_uj_per_inference"] < r["energy"]["model_uj_per_inference"]
    assert rq["totals"]["dtype_aware_intensity"] > t["dtype_aware_intensity"]


def _consistent(s, runs):
    assert s["runs"] == runs
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0 and s["min"] > 0


@pytest.mark.parametrize("target", ["cpu", "cpu:onnxruntime"])
def test_latency_statistics_from_timed_runs(ds_graph, target):
    r = profile(ds_graph, target, runs=20, warmup=2)
    assert r["latency_ms"]["source"] == "measured"
    _consistent(r["latency_ms"], 20)
    if target == "cpu":
        for layer in r["layers"]:
            _consistent(layer["time_ms"], 20)
    else:
        assert r["backend_layers"], "ONNX Runtime's profiler gave no node times"
        for node in r["backend_layers"]:
            _consistent(node, 20)


def test_energy_model_and_measurement_never_mixed(ds_graph):
    r = profile(ds_graph, "cpu", runs=5, warmup=1, per_layer=False)
    e = r["energy"]
    assert e["model_uj_per_inference"] == pytest.approx(sum(e["model_breakdown_uj"].values()))
    assert e["model_uj_per_inference"] == pytest.approx(
        sum(la["energy_model_uj"] for la in r["layers"]))
    meter = meter_for("cpu")
    if meter.available:
        assert e["measured_uj_per_inference"] > 0 and e["measured_source"]
    else:
        assert e["measured_uj_per_inference"] is None and e["measured_unavailable_reason"]


def test_rapl_meter_reads_and_wraps(tmp_path):
    assert not RaplMeter(tmp_path / "absent").available
    dom = tmp_path / "intel-rapl:0"
    dom.mkdir()
    (dom / "max_energy_range_uj").write_text("1000000\n")
    (dom / "energy_uj").write_text("999000\n")
    meter = RaplMeter(tmp_path)
    assert meter.available
    meter.start()
    (dom / "energy_uj").write_text("4000\n")  # wrapped: 1000 + 4000 uJ
    assert meter.stop() == pytest.approx(5e-3)


def test_nvml_meter_against_a_stub(monkeypatch):
    """No GPU here: NVML's calls are stubbed to check the arithmetic (mJ counter -> J) and the
    reasons; on hardware the same code reads nvmlDeviceGetTotalEnergyConsumption."""
    import types

    from edgekit.profile.energy import NvmlMeter

    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert "pip install nvidia-ml-py" in NvmlMeter().reason
    readings = iter([1000, 1000, 3500])
    stub = types.SimpleNamespace(
        NVMLError=RuntimeError, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "gpu0",
        nvmlDeviceGetTotalEnergyConsumption=lambda h: next(readings))
    monkeypatch.setitem(sys.modules, "pynvml", stub)
    meter = NvmlMeter()
    assert meter.available
    meter.start()
    assert meter.stop() == pytest.approx(2.5)


def test_absent_device_is_estimated_and_labelled(ds_graph):
    r = profile(ds_graph, "cpu", device="cortex-m4")
    lat = r["latency_ms"]
    assert lat["source"] == "estimated" and lat["runs"] == 0 and lat["p50"] is None
    assert lat["estimate_ms"] == pytest.approx(
        r["totals"]["macs"] * 3.0 / 168e6 * 1e3)  # float32: 3 cycles/MAC at 168 MHz
    assert r["energy"]["measured_unavailable_reason"] == "cortex-m4 is not attached"
    assert r["fits"]["sram"]["available_bytes"] == 192 * 1024
    # a float32 CNN, which the firmware does not run: counted with the runtime's arena, and said
    assert r["fits"]["sram"]["memory"] == r["fits"]["flash"]["memory"] == "runtime"
    assert r["fits"]["sram"]["needed_bytes"] == (Executor(ds_graph).peak_activation_bytes(1)
                                                 + load_profile("cortex-m4")
                                                 .runtime_overhead_bytes)
    assert any("firmware cannot run this Graph (the microcontroller firmware runs int8" in n
               for n in r["notes"])
    validate(r.data)


def test_every_profile_loads_with_sources():
    names = profile_names()
    assert {"host", "cortex-m3-qemu", "cortex-m4", "cortex-m7", "nrf52840",
            "jetson-class-gpu"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.sources and p.clock_hz > 0 and p.sram_bytes > 0 and p.flash_bytes > 0
        for memory in (p.weight_memory, p.activation_memory):
            assert f"access_{memory}" in p.energy_pj
    host = load_profile("host")
    assert host.cores >= 1 and host.description != "host CPU (detected at run time)"


def test_fit_errors_name_the_limit_and_overshoot(ds_graph):
    weights = sum(v.nbytes for v in ds_graph.params.values())
    tiny = dataclasses.replace(load_profile("cortex-m4"), flash_bytes=weights - 100)
    limits = {lim.name: lim for lim in check_fit(ds_graph, tiny)}
    assert not limits["flash"].fits and limits["flash"].overshoot_bytes == 100
    assert limits["sram"].fits
    with pytest.raises(edgekit.EdgekitError, match=r"flash: weights .* exceeds it by 100 B"):
        require_fit(ds_graph, tiny)


@pytest.fixture(scope="module")
def int8_graph(ds_graph):
    x = np.random.default_rng(0).standard_normal((32, 1, 16, 16)).astype(np.float32)
    return edgekit.quantize(ds_graph, x)


C_SIZES = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4, "uint32_t": 4}


def _declared(folder) -> dict[str, int]:
    """What written firmware sources declare, read back from them: the arena (model.h), the
    static RAM arrays beside it, the protocol server's buffers (``ek_protocol.c``: a receive
    frame of header + payload + CRC, a reply payload, a tick count per step) and the bytes of
    the constant arrays."""
    c, h = (folder / "model.c").read_text(), (folder / "model.h").read_text()
    define = {k: int(v) for k, v in re.findall(r"#define (EK_\w+) (\d+)", h)}
    static = sum(C_SIZES[t] * int(n) for t, n in re.findall(
        r"^static (int8_t|float|int32_t|uint32_t) (?!arena\b)\w+\[(\d+)\];", c, re.M))
    return {"arena": define["EK_ARENA_BYTES"], "static": static,
            "link": 7 + define["EK_MAX_PAYLOAD"] + 4 + define["EK_MAX_PAYLOAD"]
            + 4 * define["EK_N_STEPS"],
            "consts": sum(C_SIZES[t] * int(n) for t, n in re.findall(
                r"^static const (int8_t|int16_t|int32_t|float) \w+\[(\d+)\]", c, re.M))}


def _firmware_own(graph, board: str) -> dict[str, int]:
    """The firmware's own part of ``graph``'s image on ``board``, beside what the written
    sources declare: its code, kernels and schedule (at least the empty firmware's, and every
    kernel the model calls) and its state and stack (at least the empty firmware's)."""
    from edgekit.converters import to_c, to_c_snn
    from edgekit.firmware_bridge.sizes import board_sizes

    fp = (to_c_snn if "timesteps" in graph.metadata else to_c).footprint(graph, board)
    sizes = board_sizes(board)
    assert fp.code_bytes > sizes.base_flash and fp.firmware_ram_bytes >= sizes.base_ram
    return {"code": fp.code_bytes, "ram": fp.firmware_ram_bytes}


@pytest.fixture(scope="module")
def conv_net():
    """Two 3x3 convolutions on 3x32x32 images (float32, int8): the runtime's im2col scratch
    makes its arena several times the firmware's, which has a column buffer of two columns."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 10))
    graph, _ = lower(net, (1, 3, 32, 32))
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    return graph, edgekit.quantize(graph, x), x


def test_mcu_fit_counts_what_the_firmware_declares(conv_net, tmp_path):
    """On a microcontroller profile the fit is the C writer's own plan, equal to what the
    written sources declare, not the host runtime's arena (which holds im2col scratch)."""
    from edgekit.converters.to_c import to_c

    _, q, _ = conv_net
    written = _declared(to_c(q, tmp_path))
    runtime = Executor(q).peak_activation_bytes(1)
    assert runtime > 4 * written["arena"]  # the case: the runtime's figure would overshoot
    m7 = load_profile("cortex-m7")
    limits = {lim.name: lim for lim in check_fit(q, m7)}
    sram, flash = limits["sram"], limits["flash"]
    assert sram.memory == flash.memory == "firmware"
    own = _firmware_own(q, "m3")  # a real board's profile: the portable Cortex-M3 build
    assert sram.needed_bytes == (written["arena"] + written["static"] + written["link"]
                                 + own["ram"])
    assert f"peak activations ({written['arena']:,} B) in the firmware's arena" in sram.what
    assert flash.needed_bytes == written["consts"] + own["code"]
    assert written["consts"] > sum(q.tensors[p].nbytes for p in q.params)
    r = profile(q, "cpu", device="cortex-m7")
    assert r["fits"]["sram"] == sram.to_json() and r["fits"]["sram"]["fits"]
    assert r["totals"]["peak_activation_bytes"] == runtime  # the runtime's own figure stays
    validate(r.data)
    host = {lim.name: lim for lim in check_fit(q, "host")}
    assert host["sram"].memory == "runtime"
    assert host["sram"].needed_bytes == runtime + load_profile("host").runtime_overhead_bytes


def test_mcu_fit_still_reports_the_overshoot(conv_net):
    """A model that does not fit the firmware's plan: each limit and its overshoot in bytes;
    ``memory="firmware"`` (the MCU target's) refuses a Graph the firmware cannot run."""
    graph, q, _ = conv_net
    needed = {lim.name: lim.needed_bytes for lim in check_fit(q, "cortex-m7")}
    small = dataclasses.replace(load_profile("cortex-m7"), sram_bytes=needed["sram"] - 1000,
                                flash_bytes=needed["flash"] - 10)
    limits = {lim.name: lim for lim in check_fit(q, small)}
    assert limits["sram"].overshoot_bytes == 1000 and limits["flash"].overshoot_bytes == 10
    assert limits["sram"].to_json()["overshoot_bytes"] == 1000
    with pytest.raises(edgekit.EdgekitError, match=r"does not fit cortex-m7: flash: weights and "
                                                   r"constants .* exceeds it by 10 B; sram: "
                                                   r"peak activations .* exceeds it by 1,000 B"):
        require_fit(q, small)
    with pytest.raises(edgekit.EdgekitError, match="runs int8 Graphs"):
        check_fit(graph, "cortex-m7", memory="firmware")


def test_spiking_mcu_fit_counts_what_its_writer_declares(conv_net, tmp_path):
    """A spiking Graph's fit on a microcontroller is ``to_c_snn``'s plan: its arena (with the
    output sum), membranes, link buffers and counters, and its constants, as written."""
    from edgekit.converters.snn import to_snn
    from edgekit.converters.to_c_snn import to_c_snn

    graph, _, x = conv_net
    snn = to_snn(graph, x, 2)
    written = _declared(to_c_snn(snn, tmp_path))
    limits = {lim.name: lim for lim in check_fit(snn, "cortex-m7")}
    assert limits["sram"].memory == "firmware"
    own = _firmware_own(snn, "m3")
    assert limits["sram"].needed_bytes == (written["arena"] + written["static"]
                                           + written["link"] + own["ram"])
    assert limits["flash"].needed_bytes == written["consts"] + own["code"]


def _mcu_or_skip():
    from edgekit.targets import get_target

    ok, why = get_target("mcu:qemu").available()
    if not ok:
        pytest.skip(f"mcu:qemu unavailable: {why}")


def test_deploy_refuses_a_graph_that_does_not_fit(int8_graph, tmp_path):
    """The MCU target checks its profile (here a shrunk Cortex-M4) before building firmware."""
    _mcu_or_skip()
    text = (resources.files("edgekit.targets") / "profiles" / "cortex-m4.toml").read_text()
    toml = tmp_path / "tiny.toml"
    toml.write_text(text.replace("sram_bytes = 196_608", "sram_bytes = 4_000"))
    with pytest.raises(edgekit.EdgekitError, match=r"does not fit cortex-m4: sram: .* exceeds "
                                                   r"it by [\d,]+ B"):
        edgekit.deploy(int8_graph, target="mcu:qemu", profile=str(toml)).close()


MLPERF_TINY = ["kws_ds_cnn", "vww_mobilenet_v1", "ic_resnet8", "ad_autoencoder"]
MCU_PROFILES = [p for p in profile_names() if load_profile(p).kind == "mcu"]


@functools.cache
def _reference_int8(name: str):
    """MLPerf Tiny network ``name`` imported as users save it and quantized to int8."""
    from edgekit import zoo

    x = torch.from_numpy(zoo.sample_inputs(name, 1))
    graph = edgekit.from_torch(torch.export.export(zoo.network(name), (x,)))
    return edgekit.quantize(graph, zoo.sample_inputs(name, 16, seed=2))


def _needed(q) -> dict[str, int]:
    return {lim.name: lim.needed_bytes for lim in check_fit(q, "cortex-m4")}


def _profiles(q, folder) -> list[str]:
    """Every MCU device profile, and two at the edge of ``q``'s firmware plan as .toml files:
    SRAM and flash exactly what it needs ('exact', fits) and one byte less ('short')."""
    need = _needed(q)
    text = (resources.files("edgekit.targets") / "profiles" / "cortex-m4.toml").read_text()
    edges = []
    for edge, less in (("exact", 0), ("short", 1)):
        path = folder / f"{edge}.toml"
        path.write_text(re.sub(r"(?m)^sram_bytes = .*$", f"sram_bytes = {need['sram'] - less}",
                               re.sub(r"(?m)^flash_bytes = .*$",
                                      f"flash_bytes = {need['flash'] - less}", text)))
        edges.append(str(path))
    return MCU_PROFILES + edges


def _cli_fits(out: str) -> dict[str, tuple[int, bool]]:
    """(bytes needed, fits) per limit, read from the rows ``edgekit profile`` prints."""
    rows = re.findall(r"^fits (\w+) +(yes|NO \(\+[\d,]+ B\)) +([\d,]+) of ", out, re.M)
    return {lim: (int(needed.replace(",", "")), verdict == "yes")
            for lim, verdict, needed in rows}


@pytest.mark.parametrize("name", MLPERF_TINY)
def test_one_fit_verdict_on_the_reference_models(name, tmp_path, capsys):
    """On every MCU profile (and at the edge of the model's needs, where the verdict flips),
    ``edgekit profile --profile`` prints, and ``edgekit.profile`` reports, the bytes and
    verdicts of ``check_fit``; these are what the firmware's sources declare for the model
    (model.h's arena, the column buffer, the protocol's buffers, the constant arrays) plus
    the firmware's own code, state and stack on the profile's board."""
    from edgekit.converters.to_c import to_c
    from edgekit.profile.fit import firmware_board

    q = _reference_int8(name)
    written = _declared(to_c(q, tmp_path / "src"))
    model = q.save(tmp_path / f"{name}.int8.ekm")
    for prof in _profiles(q, tmp_path):
        limits = {lim.name: lim for lim in check_fit(q, prof)}
        assert {lim.memory for lim in limits.values()} == {"firmware"}
        own = _firmware_own(q, firmware_board(load_profile(prof)))
        assert limits["sram"].needed_bytes == (written["arena"] + written["static"]
                                               + written["link"] + own["ram"])
        assert limits["flash"].needed_bytes == written["consts"] + own["code"]
        want = {k: (lim.needed_bytes, lim.fits) for k, lim in limits.items()}
        assert want["sram"][1] == want["flash"][1] == (not prof.endswith("short.toml"))
        assert {k: (v["needed_bytes"], v["fits"])
                for k, v in profile(q, device=prof)["fits"].items()} == want
        assert cli.main(["profile", str(model), "--profile", prof]) == 0
        assert _cli_fits(capsys.readouterr().out) == want


class _BoardStarted(Exception):
    """Raised where the MCU target would start the emulated board: ``deploy`` accepted the
    model's fit and built the firmware ``args[0]``."""


def _start_no_board(elf, **link):
    raise _BoardStarted(elf)


@pytest.mark.slow  # builds each network's firmware (~10 s each when not cached)
@pytest.mark.parametrize("name", MLPERF_TINY)
def test_deploy_and_the_built_firmware_agree_with_the_fit(name, tmp_path, monkeypatch):
    """``deploy(q, "mcu:qemu", profile=...)`` accepts the reference models exactly where
    ``check_fit`` says they fit and refuses them one byte short, naming the same bytes; the
    image it builds holds the planned arena, column and link buffers in its static RAM, and
    the fit's flash and RAM are the image's, from above: RAM within alignment
    (``RAM_ALIGN_SLACK`` and the empty firmware's own), flash within 2 % (kernels sharing
    helpers each count them; ``run_step`` is bounded per argument)."""
    _mcu_or_skip()
    from edgekit.converters.to_c import footprint
    from edgekit.firmware_bridge import board
    from edgekit.firmware_bridge.sizes import RAM_ALIGN_SLACK
    from edgekit.targets.mcu import elf_sizes

    monkeypatch.setattr(board, "QemuBoard", _start_no_board)  # the fault: no board started
    q = _reference_int8(name)
    need = _needed(q)
    for prof in _profiles(q, tmp_path):
        if prof.endswith("short.toml"):
            with pytest.raises(edgekit.EdgekitError) as refused:
                edgekit.deploy(q, "mcu:qemu", profile=prof)
            for lim in ("flash", "sram"):
                assert re.search(rf"{lim}: .* need {need[lim]:,} B of {need[lim] - 1:,} B, "
                                 r"exceeds it by 1 B", str(refused.value))
            continue
        with pytest.raises(_BoardStarted) as started:
            edgekit.deploy(q, "mcu:qemu", profile=prof)
    sizes = elf_sizes(started.value.args[0])
    fp = footprint(q)
    static = sizes["ram_bytes"] - sizes["stack_bytes"]  # .data + .bss
    assert static >= fp.activation_bytes + fp.scratch_bytes + fp.link_bytes
    assert sizes["ram_bytes"] <= need["sram"] <= sizes["ram_bytes"] + 2 * RAM_ALIGN_SLACK
    assert sizes["flash_bytes"] <= need["flash"] <= sizes["flash_bytes"] * 1.02
    print(f"\n{name}: fit needs SRAM {need['sram']:,} B, flash {need['flash']:,} B; the image "
          f"RAM {sizes['ram_bytes']:,} B (static {static:,} B), flash "
          f"{sizes['flash_bytes']:,} B")


@pytest.mark.slow  # builds five images (~5 s each when not cached)
def test_the_fit_bounds_the_image_on_every_core(conv_net):
    """On the other cores' builds too (their own kernels, flags and board files) and for
    spiking Graphs (``to_c_snn``'s time loop), the fit's flash and RAM are the built image's
    from above: RAM within alignment, flash within 5 % (a spiking model's loop is bounded
    coarsely, and identical constant arrays that GCC folds into one are each counted)."""
    from edgekit.converters import to_c, to_c_snn
    from edgekit.converters.snn import to_snn
    from edgekit.firmware_bridge.build import build, toolchain_missing
    from edgekit.firmware_bridge.ports import PORTS
    from edgekit.firmware_bridge.sizes import RAM_ALIGN_SLACK, board_sizes, elf_sections

    assert all(board_sizes(core) for core in PORTS)  # every core's sizes are measured
    if toolchain_missing():
        pytest.skip(toolchain_missing())
    graph, q, x = conv_net
    snn = to_snn(graph, x, 2)
    cases = [(_reference_int8("kws_ds_cnn"), core) for core in PORTS if core != "m3"]
    cases += [(snn, "m3"), (edgekit.quantize(snn, x), "m4")]
    for model, core in cases:
        writer = to_c_snn if "timesteps" in model.metadata else to_c
        fp = writer.footprint(model, core)
        image = elf_sections(build(*writer.generate(model), board=core).elf)
        assert image["ram_bytes"] <= fp.sram_bytes <= image["ram_bytes"] + 2 * RAM_ALIGN_SLACK
        assert image["flash_bytes"] <= fp.flash_bytes <= image["flash_bytes"] * 1.05, core
        print(f"{writer.__name__.rsplit('.')[-1]} on {core}: fit flash {fp.flash_bytes:,} B, "
              f"RAM {fp.sram_bytes:,} B; image {image['flash_bytes']:,} B, "
              f"{image['ram_bytes']:,} B")


def test_profile_on_the_emulated_board(int8_graph, tmp_path, capsys):
    """The board's own run is part of every mcu report (instructions, the image's flash and
    RAM, its outputs against the runtime's); per-layer counts come with per_layer."""
    _mcu_or_skip()
    r = profile(int8_graph, "mcu:qemu", runs=5, warmup=1)
    assert r["latency_ms"]["source"] == "emulated" and r["device"]["name"] == "cortex-m3-qemu"
    _consistent(r["latency_ms"], 5)
    run = r["device_run"]
    assert run["instructions"] == sum(la["time_ms"]["instructions"] for la in r["layers"]) > 0
    assert run["vs_edgekit_runtime"] == {"identical": True, "max_abs_error": 0.0}
    assert r["energy"]["measured_uj_per_inference"] is None
    validate(r.data)
    # the README's command, without --per-layer: the device run is in the default report
    model = int8_graph.save(tmp_path / "m.int8.ekm")
    assert cli.main(["profile", str(model), "--target", "mcu:qemu", "--runs", "2",
                     "--warmup", "1", "--json", str(tmp_path / "r.json")]) == 0
    out, doc = capsys.readouterr().out, json.loads((tmp_path / "r.json").read_text())
    validate(doc)
    run = doc["device_run"]
    assert all(la["time_ms"] is None for la in doc["layers"])  # per layer: --per-layer
    assert run["flash_bytes"] > 0 and run["ram_bytes"] > 0 and run["vs_edgekit_runtime"][
        "identical"]
    assert re.search(rf"^instructions +{run['instructions']:,} ", out, re.M)
    assert re.search(rf"^firmware image +flash {run['flash_bytes']:,} B, RAM "
                     rf"{run['ram_bytes']:,} B ", out, re.M)
    assert re.search(r"^outputs vs runtime +identical ", out, re.M)


def test_json_validates_and_schema_catches_defects(ds_graph, tmp_path):
    path = profile(ds_graph, "cpu", runs=5, warmup=1).save_json(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    validate(doc)
    for key in ("model", "target", "totals", "latency_ms", "energy", "fits", "layers"):
        assert key in doc
    del doc["energy"]["measured_unavailable_reason"]
    with pytest.raises(edgekit.EdgekitError, match="measured_unavailable_reason"):
        validate(doc)
    doc = json.loads(path.read_text())
    doc["latency_ms"]["p99"] = "fast"
    with pytest.raises(edgekit.EdgekitError, match=r"\$\.latency_ms\.p99"):
        validate(doc)


def test_plots_are_written(ds_graph, tmp_path):
    pytest.importorskip("matplotlib")
    for device in (None, "nrf52840"):
        out = profile(ds_graph, "cpu", runs=3, warmup=1, device=device).plot(tmp_path / "p.png")
        assert out.stat().st_size > 5000
        out.unlink()


def test_pareto_front():
    # (cost, accuracy): the third is beaten by the first (cheaper and as accurate)
    assert pareto_front([1.0, 2.0, 3.0, 0.5], [0.9, 0.95, 0.9, 0.5]) == [0, 1, 3]
    assert pareto_front([1.0, 2.0], [5.0, 1.0], maximize_y=False) == [0, 1]


def test_cli_profile_and_compare(ds_graph, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    float_path = ds_graph.save(tmp_path / "f.ekm")
    x = rng.standard_normal((40, 1, 16, 16)).astype(np.float32)
    edgekit.quantize(ds_graph, x).save(tmp_path / "q.ekm")
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 10, 40))
    assert cli.main(["profile", str(float_path), "--runs", "5", "--warmup", "1", "--per-layer",
                     "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "latency (measured)" in out and "energy (model)" in out and "3.pointwise.0" in out
    validate(json.loads((tmp_path / "r.json").read_text()))
    assert (tmp_path / "r.png").stat().st_size > 0
    assert cli.main(["profile", "--compare", str(float_path), str(tmp_path / "q.ekm"),
                     "--labels", str(tmp_path / "d.npz"), "--runs", "5", "--warmup", "1",
                     "--plot", str(tmp_path / "pareto.png"),
                     "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "q" in out and (tmp_path / "pareto.png").stat().st_size > 0
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["model"] for r in rows] == ["f", "q"]
    assert any(r["pareto_energy"] for r in rows)
    assert cli.main(["profile", str(float_path), "--profile", "cortex-m0"]) == 2
    assert "unknown device profile 'cortex-m0'" in capsys.readouterr().err


def test_profiling_does_not_import_torch(ds_graph, tmp_path):
    """The device side (counts, fit, latency on the runtime, energy) needs numpy and numba only."""
    path = ds_graph.save(tmp_path / "m.ekm")
    code = ("import sys, edgekit; r = edgekit.profile(edgekit.load(sys.argv[1]), 'cpu', runs=2, "
            "warmup=1); edgekit.profile.check_fit(edgekit.load(sys.argv[1]), 'nrf52840'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
