"""``edgekit fleet simulate|serve|join|run``: the fleet's command line, added to ``edgekit``'s
parser by ``add_parser``. Flower loads only when a fleet command runs."""

from __future__ import annotations

import argparse
import json
import signal
from typing import Any

from edgekit.console import table
from edgekit.errors import EdgekitError
from edgekit.fileio import check_file

RULES = ["lls", "lls-m", "lls-mxm", "ff", "dfa", "bp"]


def add_parser(sub: Any) -> None:
    fl = sub.add_parser("fleet", help="fine-tune over a fleet of devices (Flower)")
    fsub = fl.add_subparsers(dest="fleet_command", required=True)
    s = fsub.add_parser("simulate", help="a simulated fleet on this machine (Flower's "
                        "simulation engine)")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npz with inputs 'x' and labels 'y', split "
                   "over the clients")
    s.add_argument("--test", help="held-out .npz scored after every round (default: a fifth "
                   "of --data, kept out of training)")
    s.add_argument("--clients", type=int, default=10)
    s.add_argument("--rounds", type=int, default=10)
    _training_args(s)
    s.add_argument("--partition", default="iid", help="iid, or label[:ALPHA] (Dirichlet label "
                   "skew, default ALPHA 0.5)")
    s.add_argument("--profiles", default="host", help="device profiles, comma-separated; "
                   "client i gets the (i mod n)-th and trains what fits its SRAM")
    s.add_argument("--no-centralized", action="store_true",
                   help="skip the centralized baseline on the pooled data")
    s.add_argument("-o", "--out", required=True, help="the global model (.ekm)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)

    sv = fsub.add_parser("serve", help="a SuperLink the devices join (until Ctrl-C)")
    sv.add_argument("--port", type=int, default=9092)
    sv.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    _home_arg(sv)
    sv.add_argument("--tls-cert", help="server certificate (PEM); without TLS files the link "
                    "is insecure")
    sv.add_argument("--tls-key", help="server private key (PEM)")
    sv.add_argument("--tls-ca", help="CA certificate (PEM)")
    sv.set_defaults(func=cmd_serve)

    jn = fsub.add_parser("join", help="this device joins a fleet with its shard (until Ctrl-C)")
    jn.add_argument("--server", required=True, help="the SuperLink, HOST:PORT")
    jn.add_argument("--data", required=True, help="this device's .npz with 'x' and 'y'")
    jn.add_argument("--profile", default="host", help="this device's profile (what fits its "
                    "SRAM trains)")
    jn.add_argument("--id", type=int, help="this device's number in reports (default: its pid)")
    jn.add_argument("--tls-ca", help="CA certificate the server's is checked against")
    _home_arg(jn)
    jn.set_defaults(func=cmd_join)

    rn = fsub.add_parser("run", help="start a federation on a SuperLink and wait for it")
    rn.add_argument("model")
    rn.add_argument("--server", required=True, help="the SuperLink, HOST:PORT (run this where "
                    "the SuperLink runs: the ServerApp reads and writes this machine's files)")
    rn.add_argument("--test", required=True, help="held-out .npz scored after every round")
    rn.add_argument("--clients", type=int, required=True, help="devices the first round waits "
                    "for")
    rn.add_argument("--rounds", type=int, default=10)
    rn.add_argument("--quorum", type=int, help="devices later rounds go on with (default: "
                    "half the fleet)")
    rn.add_argument("--round-timeout", type=float, help="seconds a round waits for replies "
                    "(default: 60 + 5 per device); a device silent by then counts as a failure")
    _training_args(rn)
    rn.add_argument("--tls-ca", help="CA certificate the server's is checked against")
    rn.add_argument("-o", "--out", required=True, help="the global model (.ekm)")
    rn.add_argument("--json", action="store_true")
    rn.set_defaults(func=cmd_run)


def _home_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="Flower's home folder, kept (default: a temporary one)")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rule", default="lls", choices=RULES)
    p.add_argument("--strategy", default="fedavg", help="fedavg, fedprox or fedadam")
    p.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--lr", type=float, help="learning rate (default: the rule's own), decayed "
                   "over the rounds")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--proximal-mu", type=float, default=0.1, help="FedProx's pull towards the "
                   "global weights")
    p.add_argument("--server-lr", type=float, help="FedAdam's server-side learning rate "
                   "(default 0.03)")
    p.add_argument("--seed", type=int, default=0)


def cmd_simulate(args: argparse.Namespace) -> None:
    from edgekit.cli import load_data, load_model
    from edgekit.fleet.runs import require_flower

    check_file(args.out, (args.model, args.data, args.test))
    require_flower()
    graph = load_model(args.model)
    x, y = _labelled(args.data, load_data)
    test = _labelled(args.test, load_data) if args.test else None
    from edgekit.fleet.simulation import simulate

    tuned, report = simulate(
        graph, x, y, clients=args.clients, rounds=args.rounds, rule=args.rule,
        partition=args.partition, strategy=args.strategy, profiles=args.profiles.split(","),
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        proximal_mu=args.proximal_mu, server_lr=args.server_lr, test=test,
        centralized=not args.no_centralized, quiet=args.json)
    tuned.save(args.out)
    show(report, args.json, f"wrote {args.out}")


def cmd_serve(args: argparse.Namespace) -> None:
    from edgekit.fleet.deploy import serve

    _exit(serve(args.port, args.host, args.home, (args.tls_cert, args.tls_key, args.tls_ca)))


def cmd_join(args: argparse.Namespace) -> None:
    from edgekit.fleet.deploy import join

    _exit(join(args.server, args.data, args.profile, args.id, args.home, args.tls_ca))


def _exit(code: int) -> None:
    """Ctrl-C and SIGTERM are the ordinary end of a server or device: exit 0 after them."""
    if code not in (0, 130, -signal.SIGTERM):
        raise EdgekitError(f"Flower exited with code {code} (its log is above)")


def cmd_run(args: argparse.Namespace) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from edgekit.cli import load_model
    from edgekit.fleet import deploy, runs

    check_file(args.out, (args.model, args.test))
    deploy.address(args.server)
    graph = load_model(args.model)
    x_test, y_test = _labelled(args.test, _load())
    cfg = runs.settings(nodes=args.clients, rounds=args.rounds, rule=args.rule,
                        strategy=args.strategy, epochs=args.epochs, lr=args.lr,
                        batch_size=args.batch_size, seed=args.seed,
                        proximal_mu=args.proximal_mu, server_lr=args.server_lr,
                        quorum=args.quorum,
                        timeout=args.round_timeout or 60.0 + 5.0 * args.clients)
    run = Path(tempfile.mkdtemp(prefix="edgekit-fleet-"))
    try:
        runs.prepare(run, graph, x_test, y_test, cfg)
        deploy.run(args.server, run, args.tls_ca, quiet=args.json)
        tuned, result = runs.results(run)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    tuned.save(args.out)
    show(runs.report(result, {"rule": args.rule, "strategy": args.strategy}), args.json,
         f"wrote {args.out}")


def _load() -> Any:
    from edgekit.cli import load_data

    return load_data


def _labelled(path: str, load_data: Any) -> tuple[Any, Any]:
    x, y = load_data(path)
    if y is None:
        raise EdgekitError(f"{path}: fleet learning needs labels ('y') beside the inputs")
    return x, y


def show(report: dict[str, Any], as_json: bool, wrote: str) -> None:
    """The report as JSON, or a table of rounds and one of clients."""
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(table(["round", "accuracy", "loss", "clients", "failures", "seconds"],
                [(r["round"], f"{r['accuracy']:.2%}", f"{r['loss']:.4f}", r["clients"],
                  r["failures"], f"{r['seconds']:.1f}") for r in report["rounds"]]))
    print(table(["client", "profile", "layers trained", "examples"],
                [(i, c["profile"], f"{c['layers_trained']}/{c['layers_total']}", c["examples"])
                 for i, c in enumerate(report["clients"])]))
    if "centralized_accuracy" in report:
        print(f"centralized ({report['rule']}, pooled data): "
              f"{report['centralized_accuracy']:.2%}")
    print(wrote)
