"""The run-time edge refuses what can only give a wrong answer, in one line: inputs that are
NaN/inf (int8 backends turned them into confident outputs), not real numbers or of the wrong
shape, on every Session; labels that are not one class index per sample (``deploy --validate``
reported 0-14 % for a 93 % model); malformed device profiles; ``--runs 0``; object, complex
and pickled data files; a multi-output model in ``edgekit run``; and an emulated board outlives
no host that was killed (QEMU kept running under PID 1 after ``kill -9``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_targets import PEERS, available_or_skip, two_inputs_two_outputs

import edgekit
from edgekit import EdgekitError
from edgekit.cli import main
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import UnsupportedOpsError
from edgekit.ops import OPS
from edgekit.profile import profile
from edgekit.profile.devices import load_profile, profile_names
from edgekit.runtime import Executor
from edgekit.targets import Session
from edgekit.validate import validate

TARGETS = ["cpu", *PEERS]
EDGEKIT = str(Path(sys.executable).parent / "edgekit")
CORTEX_M4 = (Path(__file__).parents[1] / "targets" / "profiles" / "cortex-m4.toml").read_text()


def refused(returncode: int, stderr: str, *words: str) -> None:
    """Exit 2 with one stderr line, an edgekit error naming ``words``; no traceback."""
    lines = stderr.strip().splitlines()
    assert returncode == 2 and len(lines) == 1, (returncode, stderr[-3000:])
    assert lines[0].startswith("edgekit: error: ") and "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]


def refused_by_main(capsys, args: list, *words: str) -> None:
    rc = main([str(a) for a in args])
    refused(rc, capsys.readouterr().err, *words)


def refused_by_console(args: list, *words: str) -> None:
    """As a user meets it: the installed ``edgekit`` script in its own process."""
    proc = subprocess.run([EDGEKIT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    refused(proc.returncode, proc.stderr, *words)


@pytest.fixture(scope="module")
def classifier(digits):
    """A least-squares linear classifier of the digits (numpy only, about 93 % on the test
    split) and its int8 quantization: real accuracies that a wrong label reading would change."""
    x = digits.x_train.reshape(len(digits.x_train), -1)
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, np.eye(10)[digits.y_train], rcond=None)[0].astype(np.float32)
    b = GraphBuilder()
    flat = b.node("reshape", [b.input("x", (1, *digits.x_train.shape[1:]))],
                  {"shape": [x.shape[1]]})
    b.output(b.node("linear", [flat, b.param(w[:-1].T.copy(), "fc.w"), b.param(w[-1], "fc.b")],
                    name="fc"))
    graph = b.build()
    return graph, edgekit.quantize(graph, digits.x_train[:300])


@pytest.fixture(scope="module")
def files(classifier, digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    graph, quantized = classifier
    graph.save(root / "f.ekm")
    quantized.save(root / "q.ekm")
    np.savez(root / "test.npz", x=digits.x_test, y=digits.y_test)
    return root


@pytest.fixture(scope="module")
def sessions(classifier):
    """One Session per (target, float32 or int8), opened once for the module."""
    opened: dict[tuple[str, str], Session] = {}

    def get(target: str, dtype: str) -> Session:
        available_or_skip(target)
        if (target, dtype) not in opened:
            opened[target, dtype] = edgekit.deploy(classifier[dtype == "int8"], target)
        return opened[target, dtype]

    yield get
    for session in opened.values():
        session.close()


def with_value(x: np.ndarray, value: float) -> np.ndarray:
    x = x.copy()
    x[1, 0, 5, 7] = value
    return x


# ---- inputs at the edge of every Session ----------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("target", TARGETS)
def test_int8_sessions_refuse_nonfinite_inputs_even_when_allowed(sessions, digits, target,
                                                                  value):
    session = sessions(target, "int8")
    x = digits.x_test[:3]
    assert session.run(x).shape == (3, 10)
    for allow in (False, True):  # an int8 input cannot hold NaN/inf: no opt-out
        with pytest.raises(EdgekitError, match=r"input 'x' holds 1 NaN or inf value\(s\) \(the "
                                               r"first at index \(1, 0, 5, 7\)\); an int8 model"):
            session.run(with_value(x, value), allow_nonfinite=allow)


@pytest.mark.parametrize("target", TARGETS)
def test_float_sessions_refuse_nonfinite_inputs_unless_allowed(sessions, digits, target):
    session = sessions(target, "float32")
    x = with_value(digits.x_test[:3], np.nan)
    with pytest.raises(EdgekitError, match="holds 1 NaN or inf.*allow_nonfinite=True"):
        session.run(x)
    with pytest.raises(EdgekitError, match="holds 1 NaN or inf.*allow_nonfinite=True"):
        session.run_layers(x)
    y = session.run(x, allow_nonfinite=True)
    finite = session.run(x[[0, 2]])
    np.testing.assert_allclose(y[[0, 2]], finite, rtol=1e-5, atol=1e-5)  # the others unharmed
    # float64 beyond float32's range would become inf on the way in
    with pytest.raises(EdgekitError, match="as float32, from float64"):
        session.run(with_value(digits.x_test[:3].astype(np.float64), 1e300))


def test_the_runtime_fast_path_checks_too(classifier, digits):
    """Executor.run feeds one float32 array straight into its arena: the same refusal, and
    finite values it cannot screen cheaply (above 1e19) still run."""
    graph, quantized = classifier
    for g in (graph, quantized):
        executor = Executor(g)
        x = digits.x_test[:1]
        executor.run(x)
        with pytest.raises(EdgekitError, match="holds 1 NaN or inf"):
            executor.run(with_value(digits.x_test[:2], np.inf))
    huge = np.full((1, 1, 16, 16), 3e30, np.float32)
    np.testing.assert_array_equal(Executor(graph).run(huge),
                                  Executor(graph).run(huge, allow_nonfinite=True))


@pytest.mark.parametrize("dtype, words", [
    (bool, "bool data (booleans)"),
    (np.complex64, "complex64 data (complex numbers)"),
    (object, "object data (Python objects)"),
    ("U3", "<U3 data (strings)"),
])
@pytest.mark.parametrize("precision", ["float32", "int8"])
@pytest.mark.parametrize("target", TARGETS)
def test_inputs_that_are_not_real_numbers_are_refused_by_dtype(sessions, digits, target,
                                                               precision, dtype, words):
    x = digits.x_test[:2].astype(dtype)
    with pytest.raises(EdgekitError, match=re.escape(f"input 'x': got {words}; the model")):
        sessions(target, precision).run(x)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_sample_without_its_batch_axis_names_both_shapes(sessions, digits, precision):
    with pytest.raises(EdgekitError, match=r"expected shape \(N, 1, 16, 16\), got \(1, 16, 16\); "
                                           r"one sample needs a batch axis: x\[None\]"):
        sessions("cpu", precision).run(digits.x_test[0])


# ---- labels -----------------------------------------------------------------------------------

ACCEPTED = {
    "column": lambda y: y[:, None],
    "one-hot": lambda y: np.eye(10)[y],
    "float": lambda y: y.astype(np.float32),
}
REFUSED = {
    "fractional": (lambda y: y + 0.5, "whole numbers"),
    "negative": (lambda y: y - 1, "negative"),
    "too large": (lambda y: y + 1, "outside [0, 9] (the model has 10 outputs)"),
    "one label": (lambda y: y[:1], "got 1 label(s) for 359 sample(s)"),
    "short": (lambda y: y[:-3], "got 356 label(s) for 359 sample(s)"),
    "soft": (lambda y: np.eye(10)[y] * 0.9 + 0.01, "got shape (359, 10)"),
    "bool": (lambda y: y > 4, "got bool data"),
    "text": (lambda y: y.astype(str), "data; labels are class indices"),
}


@pytest.mark.parametrize("form", ACCEPTED)
def test_labels_in_another_layout_give_the_true_accuracy(classifier, digits, files, form,
                                                          capsys):
    _, quantized = classifier
    truth = validate(quantized, "cpu", digits.x_test, digits.y_test, per_layer=False)
    assert truth["accuracy"] > 0.9
    y = ACCEPTED[form](digits.y_test)
    assert validate(quantized, "cpu", digits.x_test, y, per_layer=False)["accuracy"] \
        == truth["accuracy"]
    np.savez(files / "labels.npz", x=digits.x_test, y=y)
    assert main(["deploy", str(files / "q.ekm"), "--validate", str(files / "labels.npz"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == truth["accuracy"]


@pytest.mark.parametrize("form", REFUSED)
def test_labels_that_are_not_class_indices_are_refused(classifier, digits, files, form, capsys):
    _, quantized = classifier
    change, words = REFUSED[form]
    y = change(digits.y_test)
    with pytest.raises(EdgekitError, match="labels: ") as err:
        validate(quantized, "cpu", digits.x_test, y, per_layer=False)
    assert words in str(err.value)
    np.savez(files / "labels.npz", x=digits.x_test, y=y)
    refused_by_main(capsys, ["deploy", files / "q.ekm", "--validate", files / "labels.npz"],
                    words)


def test_one_label_is_right_for_one_sample(classifier, digits):
    x, y = digits.x_test[:1], digits.y_test[:1]
    right = float(edgekit.deploy(classifier[1]).run(x).argmax() == y[0])
    assert validate(classifier[1], "cpu", x, y, per_layer=False)["accuracy"] == right


# ---- device profiles --------------------------------------------------------------------------

BAD_PROFILES = {
    "not UTF-8": (lambda t: t.encode().replace(b"STM32F4-class", b"STM32F4\xff"),
                  "is UTF-8 text; byte 0xff at offset"),
    "TOML syntax": (lambda t: t.replace("cores = 1", "cores = = 1"), "not valid TOML"),
    "zero clock": (lambda t: t.replace("168_000_000", "0"), "'clock_hz' must be an integer"),
    "negative clock": (lambda t: t.replace("168_000_000", "-5"), "'clock_hz'"),
    "clock as text": (lambda t: t.replace("168_000_000", '"fast"'), "'clock_hz'"),
    "float memory": (lambda t: t.replace("196_608", "196.6"), "'sram_bytes'"),
    "missing key": (lambda t: t.replace("flash_bytes = 1_048_576", ""), "'flash_bytes' is missing"),
    "negative energy": (lambda t: t.replace("mac_int8 = 0.3", "mac_int8 = -0.3"),
                        "'energy_pj.mac_int8' must be a finite number >= 0"),
    "nan energy": (lambda t: t.replace("mac_int8 = 0.3", "mac_int8 = nan"),
                   "'energy_pj.mac_int8'"),
    "energy missing": (lambda t: t.replace("access_flash = 100.0", ""),
                       "'energy_pj.access_flash' is missing"),
    "unknown kind": (lambda t: t.replace('kind = "mcu"', 'kind = "phone"'), "'kind'"),
    "table as number": (lambda t: t.replace("[cycles_per_mac]", "cycles_per_mac = 3\n[x]"),
                        "'cycles_per_mac' must be a table"),
}


def test_every_shipped_profile_loads():
    assert {load_profile(name).name for name in profile_names()} == set(profile_names())


@pytest.mark.parametrize("case", BAD_PROFILES)
def test_a_malformed_device_profile_is_one_line_naming_file_and_key(files, case, capsys):
    change, words = BAD_PROFILES[case]
    changed = change(CORTEX_M4)
    assert changed not in (CORTEX_M4, CORTEX_M4.encode())
    path = files / "bad.toml"
    (path.write_bytes if isinstance(changed, bytes) else path.write_text)(changed)
    with pytest.raises(EdgekitError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
    refused_by_main(capsys, ["profile", files / "f.ekm", "--profile", path], str(path), words)


def test_a_zero_clock_profile_through_the_console_script(files):
    path = files / "zero.toml"
    path.write_text(CORTEX_M4.replace("168_000_000", "0"))
    refused_by_console(["profile", files / "f.ekm", "--profile", path], "'clock_hz'")


# ---- the CLI --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--runs", "0"], "runs must be a whole number of timed runs >= 1, got 0"),
    (["--runs", "-3"], "got -3"),
    (["--warmup", "-1"], "warmup must be a whole number of runs >= 0"),
])
def test_profile_refuses_runs_below_one(files, args, words, capsys):
    refused_by_main(capsys, ["profile", files / "f.ekm", *args], words)
    with pytest.raises(EdgekitError, match="runs must be"):
        profile(files / "f.ekm", runs=0)


@pytest.mark.parametrize("name, make, words", [
    ("objects.npy", lambda x: np.array([{"x": 1}] * 4, dtype=object), "holds Python objects"),
    ("objects.npz", lambda x: np.array([{"x": 1}] * 4, dtype=object), "holds Python objects"),
    ("complex.npz", lambda x: x.astype(np.complex64), "complex64"),
    ("complex.npy", lambda x: x.astype(np.complex128), "complex128"),
    ("bool.npy", lambda x: x > 0.5, "bool"),
    ("scalar.npy", lambda x: np.float32(1), "with a batch axis"),
])
def test_data_files_of_objects_or_complex_numbers_are_refused(files, digits, capsys, name, make,
                                                              words):
    path, x = files / name, make(digits.x_test[:4])
    if name.endswith(".npz"):  # savez pickles object arrays; np.load must not unpickle them
        np.savez(path, x=x)
    else:
        np.save(path, x, allow_pickle=True)
    for model in ("f.ekm", "q.ekm"):
        refused_by_main(capsys, ["run", files / model, "--input", path], str(path), words)
    refused_by_main(capsys, ["deploy", files / "q.ekm", "--validate", path], words)


def test_a_pickle_is_never_loaded(files, tmp_path):
    """An object array whose unpickling would write a file: refused before it runs."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(files / "evil.npy", np.array([Evil()], dtype=object), allow_pickle=True)
    refused_by_console(["run", files / "f.ekm", "--input", files / "evil.npy"], "Python objects")
    assert not marker.exists()


def test_nonfinite_data_through_the_console_script(files, digits):
    np.save(files / "nan.npy", with_value(digits.x_test[:3], np.nan))
    refused_by_console(["run", files / "q.ekm", "--input", files / "nan.npy"],
                       "input 'x' holds 1 NaN or inf", "int8 model")


def one_input_two_outputs() -> edgekit.Graph:
    """A shared trunk with two heads (the fixture two_inputs_two_outputs has two inputs too,
    which ``edgekit run`` cannot feed from one file)."""
    graph = two_inputs_two_outputs()
    b = GraphBuilder()
    x = b.input("x", (1, 2, 5, 5))
    trunk = b.node("conv2d", [x, b.param(graph.params["c.w"], "c.w")], name="trunk")
    b.output(b.node("global_avgpool", [trunk], name="pooled"))
    b.output(b.node("reshape", [trunk], {"shape": [27]}, name="flat"))
    return b.build()


def test_run_a_model_with_two_outputs(tmp_path, capsys):
    graph = one_input_two_outputs()
    graph.save(tmp_path / "two.ekm")
    x = np.random.default_rng(0).normal(size=(3, 2, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = edgekit.deploy(graph).run(x)
    assert main(["run", str(tmp_path / "two.ekm"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npz")]) == 0
    out = capsys.readouterr().out
    assert f"output {graph.outputs[0]} (3, 3, 1, 1) float32" in out
    assert f"output {graph.outputs[1]} (3, 27) float32" in out
    with np.load(tmp_path / "y.npz") as saved:
        assert saved.files == graph.outputs
        for name, value in zip(graph.outputs, expected, strict=True):
            np.testing.assert_array_equal(saved[name], value)
    assert main(["run", str(tmp_path / "two.ekm"), "--input", str(tmp_path / "x.npy"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["shape"]) for o in report["outputs"]] == \
        [(graph.outputs[0], [3, 3, 1, 1]), (graph.outputs[1], [3, 27])]
    refused_by_main(capsys, ["run", tmp_path / "two.ekm", "--input", tmp_path / "x.npy",
                             "--output", tmp_path / "y.npy"], "2 outputs", "name a .npz")
    assert not (tmp_path / "y.npy").exists()


def test_inspect_ops_lists_the_op_set_the_unsupported_op_error_points_to(capsys):
    message = str(UnsupportedOpsError("ONNX", [("Einsum", "node 3")]))
    assert "`edgekit inspect --ops`" in message
    assert main(["inspect", "--ops"]) == 0
    text = capsys.readouterr().out
    for name, spec in OPS.items():
        assert any(line.startswith(name + " ") and spec.doc[:40] in line
                   for line in text.splitlines()), name
    assert main(["inspect", "--ops", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {o["op"]: o["doc"] for o in listed} == {n: s.doc for n, s in OPS.items()}
    assert next(o for o in listed if o["op"] == "reshape")["attrs"] == {"shape": "required"}
    refused_by_main(capsys, ["inspect"], "give a MODEL")
    refused_by_main(capsys, ["inspect", "m.ekm", "--ops"], "takes no MODEL")


# ---- the emulated board dies with its host ----------------------------------------------------

def qemu_or_skip() -> None:
    from edgekit.firmware_bridge.board import qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing

    why = toolchain_missing() or qemu_missing()
    if why:
        pytest.skip(f"MCU target unavailable: {why}")


def process_state(pid: int) -> tuple[str, int] | None:
    """(state, parent PID) from /proc, or None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def test_a_board_dies_with_a_killed_host(classifier):
    """kill -9 of the process that opened a QemuBoard: QEMU ends within seconds (it may stay a
    zombie where PID 1 does not reap), instead of running on under PID 1."""
    qemu_or_skip()
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    from edgekit.converters.to_c import generate
    from edgekit.firmware_bridge.build import build

    firmware = build(*generate(classifier[1]))
    host = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from edgekit.firmware_bridge.board import QemuBoard\n"
         "print(QemuBoard(sys.argv[1]).pid, flush=True)\n"
         "time.sleep(300)", str(firmware.elf)], stdout=subprocess.PIPE, text=True)
    qemu, state = None, None
    try:
        qemu = int(host.stdout.readline())
        assert process_state(qemu)[1] == host.pid
        host.kill()
        host.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = process_state(qemu)
            if state is None or state[0] == "Z":
                break
            time.sleep(0.05)
        assert state is None or state[0] == "Z", f"QEMU {qemu} still running: {state}"
    finally:
        host.kill()
        host.wait()
        if qemu is not None and (process_state(qemu) or ("Z",))[0] != "Z":
            os.kill(qemu, signal.SIGKILL)  # the orphan this test made, not left behind


def test_a_board_opened_in_a_thread_outlives_the_thread(classifier, digits):
    """The parent-death signal follows the thread that forked, so boards are started from one
    long-lived thread: a Session deployed from a worker thread keeps working after it ends,
    and its edge refuses NaN like every other Session's."""
    qemu_or_skip()
    _, quantized = classifier
    with ThreadPoolExecutor(1) as worker:  # its thread has ended when the block is left
        session = worker.submit(edgekit.deploy, quantized, "mcu:qemu").result()
    try:
        time.sleep(0.5)
        assert session.board.process.poll() is None
        x = digits.x_test[:3]
        with edgekit.deploy(quantized, "cpu") as cpu:
            np.testing.assert_array_equal(session.run(x, raw=False), cpu.run(x))
        with pytest.raises(EdgekitError, match="holds 1 NaN or inf.*int8 model"):
            session.run(with_value(x, np.nan))
    finally:
        session.close()
