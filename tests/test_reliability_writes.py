"""Nothing edgekit writes is ever lost or half-written (issue 11, the write side).

Every file goes through ``edgekit.fileio``: concurrent writers of one path each leave one whole
model, a failed or killed write leaves the previous file, and every command checks its outputs
before any work, refusing to replace one of its own inputs. Writers run as real processes; the
faults are real too (a file-size limit, SIGKILL, SIGXFSZ); only where a kill must land in the
middle of a write is a write slowed down, by a wrapper that waits before passing it on.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit import EdgekitError
from edgekit.cli import main
from edgekit.converters.builder import GraphBuilder
from edgekit.converters.to_c import write_model
from edgekit.converters.to_onnx import to_onnx
from edgekit.converters.to_tflite import to_tflite
from edgekit.graph import Graph

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
ROOT_SKIP = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root, which ignores folder permissions: a read-only folder cannot be "
           "made (the missing-folder and under-a-file cases still run)")


def mlp(seed: int = 0, hidden: int = 16) -> Graph:
    """linear -> relu -> linear on 8 features, 3 classes; ``hidden`` sets the file's size."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder({"source": "test"})
    x = b.input("x", (1, 8))
    h = b.node("linear", [x, b.param(rng.normal(size=(hidden, 8)) * 0.3, "l1.w"),
                          b.param(rng.normal(size=hidden) * 0.1, "l1.b")], name="l1")
    h = b.node("relu", [h])
    b.output(b.node("linear", [h, b.param(rng.normal(size=(3, hidden)) * 0.3, "l2.w"),
                               b.param(np.zeros(3), "l2.b")], name="l2"))
    return b.build()


def same_model(a: Graph, b: Graph) -> bool:
    return a.params.keys() == b.params.keys() and all(
        np.array_equal(a.params[k], b.params[k]) for k in a.params)


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder with a model ``m.ekm`` and a data file ``d.npz`` (inputs and labels)."""
    mlp().save(tmp_path / "m.ekm")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    return tmp_path


def cli(*args: str | Path, cwd: Path | None = None,
        preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=ENV, timeout=300,
                          preexec_fn=preexec)


def one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), text
    return lines[0]


def refused(capsys, argv: list[str | Path]) -> str:
    """Run the CLI in this process; it must exit 2 with one error line and print nothing."""
    assert main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "", out
    return one_error_line(err)


def leftovers(folder: Path, *keep: str) -> list[str]:
    return sorted(set(os.listdir(folder)) - set(keep))


# -- concurrent writers ----------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import edgekit
    role, src, dst, ready, n, parties = sys.argv[1:7]
    graph = edgekit.load(src) if role == "save" else None
    Path(ready).touch()  # start together, so the writers really overlap
    while len(list(Path(ready).parent.glob("*.ready"))) < int(parties):
        time.sleep(0.005)
    failures = 0
    for _ in range(int(n)):
        if role == "save":
            graph.save(dst)
        else:
            try:
                edgekit.load(dst)
            except edgekit.EdgekitError as err:
                failures += 1
                print(err, file=sys.stderr)
    print(failures)
""")


def test_concurrent_saves_and_loads_of_one_path_see_whole_models(tmp_path):
    """Three processes save their own model to one path 60 times each while a fourth loads it:
    every save succeeds, every load sees a whole model, and the file ends as one of the three
    (with one fixed temporary name the savers wrote into each other's file)."""
    models = [mlp(seed, hidden=256) for seed in (1, 2, 3)]
    for i, g in enumerate(models):
        g.save(tmp_path / f"src{i}.ekm")
    dst, sync = tmp_path / "out" / "m.ekm", tmp_path / "sync"
    dst.parent.mkdir()
    sync.mkdir()
    models[0].save(dst)
    roles = [("save", tmp_path / f"src{i}.ekm", 60) for i in range(3)] + [("load", dst, 200)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, role, str(src), str(dst),
                               str(sync / f"{i}.ready"), str(n), str(len(roles))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for i, (role, src, n) in enumerate(roles)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "0", f"{out.strip()} loads saw a broken file:\n{err}"
    final = edgekit.load(dst)
    assert any(same_model(final, g) for g in models)
    assert leftovers(dst.parent, "m.ekm") == []


# -- failed and killed writes ----------------------------------------------------------------

def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("fmt", ["ekm", "tflite"])
def test_a_write_past_the_file_size_limit_keeps_the_old_file(work, fmt):
    """``ulimit -f`` (the same failure as a full disk): one error line, the previous file byte
    for byte, no temporary left (writing .tflite in place truncated it)."""
    if fmt == "tflite":
        pytest.importorskip("ai_edge_litert")
    out = work / "out"
    out.mkdir()
    target = out / f"m.{fmt}"
    args = ["-o", target] if fmt == "ekm" else ["--to", "tflite", "-o", out]
    assert cli("convert", work / "m.ekm", *args).returncode == 0
    old = target.read_bytes()
    mlp(1, hidden=16384).save(work / "m.ekm")  # 720 KB of weights, past the 256 KB limit
    proc = cli("convert", work / "m.ekm", *args, preexec=_limit_file_size(256 << 10))
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_error_line(proc.stderr)
    assert target.read_bytes() == old
    assert leftovers(out, target.name) == []


KILLED_WRITER = textwrap.dedent("""
    import resource, signal, sys
    import edgekit
    from edgekit.converters.to_onnx import to_onnx
    from edgekit.converters.to_tflite import to_tflite
    fmt, src, dst, limit = sys.argv[1:5]
    graph = edgekit.load(src)
    write = {"ekm": graph.save, "tflite": lambda p: to_tflite(graph, p),
             "onnx": lambda p: to_onnx(graph, p)}[fmt]
    # the kernel kills the process (no handler, no cleanup) when a write crosses the limit
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    write(dst)
""")


@pytest.mark.parametrize("fmt", ["ekm", "tflite", "onnx"])
def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path, fmt):
    """A writer killed by a signal halfway through its file (SIGXFSZ at 64 KB): the old file
    is whole, and the next write of the path removes what the dead writer left."""
    if fmt != "ekm":
        pytest.importorskip("onnx" if fmt == "onnx" else "ai_edge_litert")
    write = {"ekm": Graph.save, "tflite": to_tflite, "onnx": to_onnx}[fmt]
    dst = tmp_path / "out" / f"m.{fmt}"
    dst.parent.mkdir()
    write(mlp(0), dst)
    old = dst.read_bytes()
    mlp(1, hidden=4096).save(tmp_path / "big.ekm")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, fmt, str(tmp_path / "big.ekm"),
                           str(dst), str(64 << 10)], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    assert dst.read_bytes() == old
    write(mlp(2), dst)
    assert leftovers(dst.parent, dst.name) == []


SLOW_SAVER = textwrap.dedent("""
    import sys, time, zipfile
    import edgekit
    src, dst = sys.argv[1:3]
    graph = edgekit.load(src)
    writestr = zipfile.ZipFile.writestr

    def slow(self, name, data, *args, **kwargs):  # the fault: stall between the two members
        if name == "params.npz":
            print("writing", flush=True)
            time.sleep(120)
        return writestr(self, name, data, *args, **kwargs)

    zipfile.ZipFile.writestr = slow
    graph.save(dst)
""")


def test_save_killed_with_sigkill_leaves_the_old_model(tmp_path):
    """SIGKILL in the middle of ``Graph.save``: the old model loads unchanged; the next save
    succeeds and leaves no temporary behind."""
    dst = tmp_path / "out" / "m.ekm"
    dst.parent.mkdir()
    old = mlp(0)
    old.save(dst)
    mlp(1).save(tmp_path / "new.ekm")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVER, str(tmp_path / "new.ekm"),
                             str(dst)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert same_model(edgekit.load(dst), old)
    mlp(2).save(dst)
    assert same_model(edgekit.load(dst), mlp(2))
    assert leftovers(dst.parent, "m.ekm") == []


# -- outputs that would replace an input ------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ["--to-snn", "--calibration-data", "d.npz"],
    ["--quantize", "int8", "--calibration-data", "d.npz"],
    ["--to", "ekm,tflite"],
], ids=["to-snn", "quantize", "formats"])
def test_convert_into_the_models_own_folder_refuses(work, capsys, extra):
    """``convert d/m.ekm ... -o d`` would write d/m.ekm over the input."""
    old = (work / "m.ekm").read_bytes()
    line = refused(capsys, ["convert", work / "m.ekm", *extra, "-o", work])
    assert "would overwrite" in line and "input" in line
    assert (work / "m.ekm").read_bytes() == old
    assert leftovers(work, "m.ekm", "d.npz") == []


def test_an_input_named_like_an_output_is_not_overwritten(work, capsys):
    """An input ``m.float.ekm`` converted with --quantize into its own folder."""
    os.replace(work / "m.ekm", work / "m.float.ekm")
    old = (work / "m.float.ekm").read_bytes()
    refused(capsys, ["convert", work / "m.float.ekm", "--quantize", "int8",
                     "--calibration-data", work / "d.npz", "-o", work])
    assert (work / "m.float.ekm").read_bytes() == old
    assert leftovers(work, "m.float.ekm", "d.npz") == []


@pytest.mark.parametrize("argv", [
    ["convert", "m.ekm", "-o", "m.ekm"],
    ["convert", "m.ekm", "-o", "link.ekm"],
    ["run", "m.ekm", "--input", "d.npz", "--output", "d.npz"],
    ["profile", "m.ekm", "--runs", "2", "--json", "m.ekm"],
    ["finetune", "m.ekm", "--data", "d.npz", "--rule", "bp", "--out", "m.ekm"],
    ["finetune", "m.ekm", "--data", "d.npz", "--rule", "bp", "--out", "t.ekm",
     "--checkpoint", "d.npz"],
], ids=["convert", "convert-symlink", "run", "profile", "finetune-out", "finetune-checkpoint"])
def test_no_command_writes_over_its_own_input(work, capsys, monkeypatch, argv):
    monkeypatch.chdir(work)
    os.symlink("m.ekm", work / "link.ekm")
    before = {name: (work / name).read_bytes() for name in ("m.ekm", "d.npz")}
    assert "would overwrite" in refused(capsys, argv)
    assert {name: (work / name).read_bytes() for name in before} == before
    assert leftovers(work, "m.ekm", "d.npz", "link.ekm") == []


# -- output locations checked before any work -------------------------------------------------

WRITES = {  # each command that writes, with its output in a folder OUT that cannot take it
    "convert": ["convert", "m.ekm", "-o", "{OUT}/m.ekm"],
    "convert-formats": ["convert", "m.ekm", "--to", "ekm,tflite", "-o", "{OUT}/sub"],
    "run": ["run", "m.ekm", "--input", "d.npz", "--output", "{OUT}/y.npy"],
    "profile-json": ["profile", "m.ekm", "--runs", "2", "--json", "{OUT}/p.json"],
    "profile-plot": ["profile", "m.ekm", "--runs", "2", "--plot", "{OUT}/p.png"],
    "compare-json": ["profile", "--compare", "m.ekm", "m.ekm", "--runs", "2",
                     "--json", "{OUT}/c.json"],
    "finetune": ["finetune", "m.ekm", "--data", "d.npz", "--rule", "bp", "--epochs", "1",
                 "--out", "{OUT}/t.ekm"],
    "finetune-checkpoint": ["finetune", "m.ekm", "--data", "d.npz", "--rule", "bp",
                            "--epochs", "1", "--out", "t.ekm", "--checkpoint", "{OUT}/t.ckpt"],
    "demo": ["demo", "--out", "{OUT}/demo"],
}
MAKES_ITS_FOLDER = {"convert-formats", "demo"}  # an output folder is created with its parents


def _unwritable(work: Path, kind: str) -> str:
    if kind == "missing":
        return "no/such/folder"
    if kind == "under-a-file":
        (work / "afile").write_text("not a folder")
        return "afile"
    (work / "ro").mkdir()
    (work / "ro").chmod(0o555)
    return "ro"


@pytest.mark.parametrize("command, kind", [
    pytest.param(command, kind, marks=[ROOT_SKIP] if kind == "read-only" else [])
    for command in WRITES for kind in ("missing", "under-a-file", "read-only")
    if not (kind == "missing" and command in MAKES_ITS_FOLDER)])
def test_unwritable_output_fails_before_any_work(work, capsys, monkeypatch, command, kind):
    """One error line, exit 2, and nothing done first: no epoch trained, no profile printed,
    nothing written anywhere (``finetune --out`` used to fail after its first epoch)."""
    if command == "demo":
        pytest.importorskip("torch")
    monkeypatch.chdir(work)
    where = _unwritable(work, kind)
    argv = [a.replace("{OUT}", where) for a in WRITES[command]]
    before = set(os.listdir(work))
    line = refused(capsys, argv)
    assert where in line or "no such" in line
    assert set(os.listdir(work)) == before


@pytest.mark.parametrize("argv", [
    ["convert", "m.ekm", "--to", "ekm,tflite", "-o", "afile"],
    ["demo", "--out", "afile"],
], ids=["convert", "demo"])
def test_a_file_where_a_folder_is_needed(work, capsys, monkeypatch, argv):
    monkeypatch.chdir(work)
    (work / "afile").write_text("keep me")
    assert "is a file" in refused(capsys, argv)
    assert (work / "afile").read_text() == "keep me"


@pytest.mark.parametrize("argv", [
    ["convert", "m.ekm", "-o", "adir.ekm"],
    ["run", "m.ekm", "--input", "d.npz", "--output", "adir.npy"],
    ["profile", "m.ekm", "--runs", "2", "--json", "adir.npy"],
    ["finetune", "m.ekm", "--data", "d.npz", "--rule", "bp", "--out", "adir.npy"],
], ids=["convert", "run", "profile", "finetune"])
def test_a_folder_where_a_file_is_needed(work, capsys, monkeypatch, argv):
    monkeypatch.chdir(work)
    for name in ("adir.ekm", "adir.npy"):
        (work / name).mkdir()
    assert "is a folder" in refused(capsys, argv)
    assert os.listdir(work / "adir.ekm") == os.listdir(work / "adir.npy") == []


@pytest.mark.parametrize("fmt", ["ekm", "tflite", "onnx", "c"])
def test_api_writers_report_an_unwritable_location_as_edgekit_error(tmp_path, fmt):
    """A folder that is a file, and (for the file writers; the C writer makes its folder) a
    missing one: an ``EdgekitError`` naming the path, not an ``OSError``."""
    pytest.importorskip({"tflite": "ai_edge_litert", "onnx": "onnx"}.get(fmt, "numpy"))
    graph = mlp()
    write = {"ekm": lambda p: graph.save(p / "m.ekm"),
             "tflite": lambda p: to_tflite(graph, p / "m.tflite"),
             "onnx": lambda p: to_onnx(graph, p / "m.onnx"),
             "c": lambda p: write_model(("/* model.c */", "/* model.h */", "0"), p / "c")}[fmt]
    (tmp_path / "afile").write_text("")
    for where in [tmp_path / "afile"] + [tmp_path / "missing"] * (fmt != "c"):
        with pytest.raises(EdgekitError, match=f"{where}.*(cannot write|is a file)"):
            write(where)
    assert leftovers(tmp_path, "afile") == []


# -- run --output ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["y.npz", "y.npy", "Y.NPZ"])
def test_run_output_is_written_exactly_where_named(work, capsys, name):
    out = work / name
    assert main(["run", str(work / "m.ekm"), "--input", str(work / "d.npz"),
                 "--output", str(out)]) == 0
    assert f"saved to {out}" in capsys.readouterr().out
    assert leftovers(work, "m.ekm", "d.npz") == [name]
    with edgekit.deploy(edgekit.load(work / "m.ekm"), target="cpu") as session:
        expected = session.run(np.load(work / "d.npz")["x"])
    if name.lower().endswith(".npz"):
        with np.load(out) as z:
            assert z.files == ["y"]
            np.testing.assert_array_equal(z["y"], expected)
    else:
        np.testing.assert_array_equal(np.load(out), expected)


def test_run_output_with_another_suffix_is_refused_first(work, capsys):
    line = refused(capsys, ["run", work / "m.ekm", "--input", work / "d.npz",
                            "--output", work / "y.txt"])
    assert ".npy" in line and ".npz" in line
    assert leftovers(work, "m.ekm", "d.npz") == []
