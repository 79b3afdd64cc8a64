"""Fleet fine-tuning on Flower: every client fine-tunes its own shard with ``edgekit.learn``
(numpy and numba, no torch), a Flower strategy (FedAvg, FedProx) aggregates the float weights,
and the global model is a Graph that quantizes and deploys like any other.

``simulate`` runs a fleet on Flower's simulation engine on one machine; ``edgekit.fleet.deploy``
starts Flower's deployment engine (a SuperLink and one SuperNode per device). The ServerApp
and ClientApp are ``edgekit.fleet.server:app`` and ``edgekit.fleet.client:app``. flwr is an
extra (``pip install 'edgekit[fleet]'``); importing this package does not import it.
"""

from edgekit.fleet.devices import Plan, plan
from edgekit.fleet.partition import partition

__all__ = ["Plan", "partition", "plan", "simulate"]


def __getattr__(name: str):
    if name == "simulate":  # flwr and ray load only when a fleet runs
        from edgekit.fleet.simulation import simulate

        return simulate
    raise AttributeError(name)
