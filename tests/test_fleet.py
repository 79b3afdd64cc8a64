"""edgekit.fleet: shards, what each device trains, layer-wise aggregation, FedProx's pull, and
federations on Flower's simulation engine and deployment engine (loopback processes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit import data, models
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.fleet import partition, plan
from edgekit.learn import finetune

flwr = pytest.importorskip("flwr", reason="fleet learning needs flwr: pip install "
                           "'edgekit[fleet]'")


@pytest.fixture(scope="module")
def digits():
    ds = data.digits(8)
    return ds.x_train.reshape(len(ds.x_train), -1), ds.y_train


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return edgekit.from_torch(models.mlp().eval(), (torch.zeros(1, 64),))


def test_iid_shards_cover_the_data_once_and_label_skew_concentrates_classes(digits):
    _, y = digits
    iid = partition(y, 8, "iid", seed=1)
    assert sorted(np.concatenate(iid).tolist()) == list(range(len(y)))
    assert max(map(len, iid)) - min(map(len, iid)) <= 1
    skew = partition(y, 8, "label:0.1", seed=1)
    assert sorted(np.concatenate(skew).tolist()) == list(range(len(y)))

    def main_class_share(shards):
        return np.mean([np.bincount(y[s]).max() / len(s) for s in shards])

    assert main_class_share(iid) < 0.25 < 0.5 < main_class_share(skew)
    for spec in ("label:0", "label:x", "dirichlet", "label:-1"):
        with pytest.raises(EdgekitError, match="partition must be"):
            partition(y, 4, spec)
    with pytest.raises(EdgekitError, match="cannot make"):
        partition(y[:3], 4)


def test_a_device_trains_the_trailing_blocks_its_sram_holds(mlp):
    host, m4 = plan(mlp, "lls", "host"), plan(mlp, "lls", "cortex-m4")
    assert (host.layers, host.total) == (3, 3)
    assert 1 <= m4.layers < 3 and m4.sram <= m4.capacity == 196_608
    # one more block would not have fitted
    bigger = edgekit.learn.memory_for(mlp, "lls", 32, m4.layers + 1)
    from edgekit.fleet.devices import sram_needed
    from edgekit.profile.devices import load_profile

    assert sram_needed(bigger, load_profile("cortex-m4")) > m4.capacity
    assert m4.names == tuple(n for n in host.names[-2 * m4.layers:])


def test_a_device_too_small_for_the_head_is_refused_with_what_it_needs(mlp, tmp_path):
    tiny = _tiny_profile(tmp_path)
    with pytest.raises(EdgekitError, match=r"tiny: training even the last layer .* needs"):
        plan(mlp, "lls", tiny)


def _tiny_profile(tmp_path: Path) -> Path:
    text = (Path(edgekit.__file__).parent.parent / "targets/profiles/cortex-m4.toml").read_text()
    path = tmp_path / "tiny.toml"
    path.write_text(text.replace('name = "cortex-m4"', 'name = "tiny"')
                    .replace("sram_bytes = 196_608", "sram_bytes = 20_000"))
    return path


def test_each_layer_is_averaged_over_the_clients_that_trained_it():
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    from edgekit.fleet.strategy import aggregate_layers

    current = ArrayRecord({"body": Array(np.zeros(2, np.float32)),
                           "head": Array(np.zeros(2, np.float32))})

    def reply(n, **arrays):
        return RecordDict({"arrays": ArrayRecord({k: Array(np.float32(v) * np.ones(2, np.float32))
                                                  for k, v in arrays.items()}),
                           "metrics": MetricRecord({"num-examples": n})})

    out = aggregate_layers(current, [reply(30, body=1.0, head=1.0), reply(10, head=5.0)])
    np.testing.assert_allclose(out["body"].numpy(), 1.0)  # the head-only client has no say
    np.testing.assert_allclose(out["head"].numpy(), (30 * 1 + 10 * 5) / 40)
    out = aggregate_layers(current, [reply(10, head=5.0)])
    np.testing.assert_allclose(out["body"].numpy(), 0.0)  # trained by no one: kept


def test_fedprox_pull_keeps_the_weights_near_where_they_started(mlp, digits):
    x, y = digits

    def drift(mu):
        tuned, _ = finetune(mlp, x[:256], y[:256], rule="lls", epochs=2, proximal_mu=mu)
        return sum(float(np.linalg.norm(tuned.params[k] - mlp.params[k])) for k in mlp.params)

    assert drift(5.0) < 0.8 * drift(0.0)
    with pytest.raises(EdgekitError, match="proximal_mu"):
        finetune(mlp, x[:8], y[:8], proximal_mu=-1.0)


def test_the_client_side_never_imports_torch():
    code = ("import sys, edgekit.fleet.client; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_fleet_simulate_cli_reports_rounds_clients_and_a_failing_device(mlp, digits, tmp_path,
                                                                      capsys):
    """Three clients on Flower's simulation engine under Flower's FedAdam: a host trains every
    layer, a cortex-m4 fewer, a device too small for even the head fails each round and is
    counted, not fatal."""
    x, y = digits
    mlp.save(tmp_path / "m.ekm")
    np.savez(tmp_path / "train.npz", x=x[:600], y=y[:600])
    np.savez(tmp_path / "test.npz", x=x[600:900], y=y[600:900])
    tiny = _tiny_profile(tmp_path)
    out = tmp_path / "global.ekm"
    assert main(["fleet", "simulate", str(tmp_path / "m.ekm"), "--data",
                 str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
                 "--clients", "3", "--rounds", "2", "--epochs", "2", "--rule", "lls",
                 "--partition", "label:1", "--strategy", "fedadam", "--server-lr", "0.1",
                 "--profiles", f"host,cortex-m4,{tiny}", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # nothing but the report on stdout
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for r in report["rounds"]:
        assert (r["clients"], r["failures"]) == (2, 1)
        assert set(r) >= {"accuracy", "loss", "seconds"}
        assert "tiny" in r["errors"][0]
    assert report["rounds"][-1]["accuracy"] > report["initial_accuracy"] + 0.1
    assert 0 < report["centralized_accuracy"] <= 1
    assert [(c["profile"], c["layers_trained"]) for c in report["clients"]] == [
        ("host", 3), ("cortex-m4", 2)]
    assert sum(c["examples"] for c in report["clients"]) < 600
    tuned = edgekit.load(out)
    assert any(not np.array_equal(tuned.params[k], mlp.params[k]) for k in mlp.params)
    with edgekit.deploy(edgekit.quantize(tuned, x[:64]), target="cpu") as session:
        int8 = (session.run(x[600:900]).argmax(1) == y[600:900]).mean()
    assert abs(int8 - report["rounds"][-1]["accuracy"]) < 0.05  # it quantizes and deploys


@pytest.mark.parametrize("argv, message", [
    (["--partition", "label:0"], "partition must be"),
    (["--clients", "0"], "clients must be a positive int"),
    (["--profiles", "cortex-m9"], "unknown device profile"),
    (["--strategy", "fedsgd"], "unknown strategy 'fedsgd'; strategies: fedavg, fedprox, fedadam"),
    (["--strategy", "fedadam", "--server-lr", "0"], "the server lr must be a positive number"),
])
def test_fleet_simulate_user_errors_are_one_line(mlp, digits, tmp_path, capsys, argv, message):
    x, y = digits
    mlp.save(tmp_path / "m.ekm")
    np.savez(tmp_path / "train.npz", x=x[:50], y=y[:50])
    code = main(["fleet", "simulate", str(tmp_path / "m.ekm"), "--data",
                 str(tmp_path / "train.npz"), "-o", str(tmp_path / "g.ekm"), "--json",
                 "--no-centralized", *argv])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and err.count("\n") == 1
    assert not (tmp_path / "g.ekm").exists()


def _flower_processes(marker: str) -> dict[int, str]:
    """Processes whose environment holds ``marker`` (every Flower process of one test
    inherits its home folder): pid -> command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(
                        b"\0", b" ").decode()
            except OSError:
                pass
    return found


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signs with the server's key: what an operator
    makes once for a fleet (``openssl req``, or any CA). Returns the CA's, the server's
    certificate and the server's key, as PEM files."""
    pytest.importorskip("cryptography", reason="the test's TLS certificates are made with the "
                        "'cryptography' package (a dependency of flwr)")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def certificate(subject: str, public, extensions) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject))
                   .issuer_name(name("edgekit test CA")).public_key(public)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = certificate("edgekit test CA", ca_key.public_key(), [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                       content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, encipher_only=False,
                       decipher_only=False), True)])
    server = certificate("127.0.0.1", key.public_key(), [
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                      x509.DNSName("localhost")]), False)])
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.mark.slow
def test_fleet_over_tls_on_loopback_survives_a_device_killed_mid_round(mlp, digits, tmp_path):
    """A SuperLink (`fleet serve`) with a certificate made here, three SuperNodes (`fleet
    join`) and `fleet run` checking it against the CA, FedProx: the first device is SIGKILLed
    while its ClientApp trains; when its heartbeat is overdue (36-60 s) Flower answers for it
    with an error, and the round ends with the two others' weights (however long they take, up
    to the round timeout) and the failure in the report. Then Ctrl-C stops the server and one
    device, SIGTERM the other, each with every process it started, and the server's --home
    stays."""
    import os
    import signal
    import time

    x, y = digits
    mlp.save(tmp_path / "m.ekm")
    for i, idx in enumerate(partition(y, 3)):
        np.savez(tmp_path / f"shard{i}.npz", x=x[idx], y=y[idx])
    np.savez(tmp_path / "test.npz", x=x[:300], y=y[:300])
    ca, cert, key = _certificates(tmp_path)
    from edgekit.fleet.deploy import free_port

    port, marker = free_port(), str(tmp_path / "home")
    edgekit_cli = [sys.executable, "-m", "edgekit.cli", "fleet"]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "")}
    server = f"127.0.0.1:{port}"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    started = [subprocess.Popen([*edgekit_cli, "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--home", f"{marker}/link", "--tls-cert", str(cert),
                                 "--tls-key", str(key), "--tls-ca", str(ca)], **quiet)]
    started += [subprocess.Popen([*edgekit_cli, "join", "--server", server, "--data",
                                  str(tmp_path / f"shard{i}.npz"), "--id", str(i), "--home",
                                  f"{marker}/node{i}", "--tls-ca", str(ca)], **quiet)
                for i in range(3)]
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([*edgekit_cli, "run", str(tmp_path / "m.ekm"), "--server", server,
                            "--tls-ca", str(ca), "--test", str(tmp_path / "test.npz"),
                            "--clients", "3", "--rounds", "1", "--epochs", "2", "--strategy",
                            "fedprox", "--round-timeout", "180", "-o", str(tmp_path / "g.ekm"),
                            "--json"], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline and run.poll() is None:
            node0 = _flower_processes(f"{marker}/node0")
            if any("flwr-clientapp" in cmd for cmd in node0.values()):
                victim = next(pid for pid, cmd in node0.items() if "flower-supernode" in cmd)
                os.kill(victim, signal.SIGKILL)
            time.sleep(0.2)
        assert victim, f"device 0 never started training: {(tmp_path / 'run.log').read_text()}"
        out, _ = run.communicate(timeout=240)
        assert run.returncode == 0, (tmp_path / "run.log").read_text()[-2000:]
        report = json.loads(out)
        (only,) = report["rounds"]
        assert (only["clients"], only["failures"]) == (2, 1)
        assert "Node Unavailable" in only["errors"][0]
        assert only["accuracy"] > report["initial_accuracy"]
        assert sorted(c["examples"] for c in report["clients"]) == sorted(
            len(s) for s in partition(y, 3)[1:])
        assert edgekit.load(tmp_path / "g.ekm")
    finally:
        run.kill()
        log.close()
        for proc, sig in zip(started, [signal.SIGINT, signal.SIGTERM, signal.SIGINT,
                                       signal.SIGTERM], strict=True):  # SIGINT: Ctrl-C
            proc.send_signal(sig)
        codes = [proc.wait(timeout=30) for proc in started]
    assert codes[0] == 0 and codes[2:] == [0, 0]  # the killed device's join exits 2, saying so
    time.sleep(1)
    assert _flower_processes(marker) == {}
    assert os.path.isdir(f"{marker}/link")  # --home is kept when given
