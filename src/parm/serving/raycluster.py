"""Ray clusters that parm starts itself: bound to 127.0.0.1, with node failures noticed in about a second.

Ray binds its GCS, raylets, workers and agents to all interfaces unless it believes it runs on a
single machine (its Windows/macOS mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); then it binds and
advertises 127.0.0.1 only, and never rewrites a loopback address to the machine's own one (which can
hang a local multi-node cluster). :func:`loopback_only` switches that mode on before parm starts a
cluster. :class:`LocalCluster` is a multi-node cluster on this machine (``ray.cluster_utils``: a
head plus one-CPU nodes, each with its own raylet) for the multi-node tests and the benchmark's
node-loss runs.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

try:
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster
except ImportError as e:
    raise ImportError("the ray backend needs Ray Serve; install it with `pip install 'parity-models[ray]'`.") from e

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# GCS health checks of raylets: a node whose raylet stops answering is declared dead after about
# 0.3 s x 4 instead of Ray's default 3 s x 5 (replicas on it are then reported dead and restarted).
# A dead raylet refuses the check at once; a live but busy one has 1 s to answer each.
FAST_NODE_FAILURE: dict[str, Any] = {
    "health_check_initial_delay_ms": 2000,
    "health_check_period_ms": 300,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 4,
}


def loopback_only() -> None:
    """Make the Ray cluster started next in this process bind and advertise 127.0.0.1 only.

    Ray reads the switch when it is imported; it is set here for the processes the cluster starts
    (they inherit the environment) and for this process's already imported constant.
    """
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


class LocalCluster:
    """A head node and ``nodes`` one-CPU worker nodes on 127.0.0.1; the driver connects to it.

    Use as a context manager: the cluster (every process it started) is gone on exit.

    Args:
        nodes: worker nodes to start.
        head_cpus: CPUs of the head node (0 keeps replicas on the worker nodes; the driver, Serve's
            controller and the GCS live on the head).
        system_config: Ray system settings (default :data:`FAST_NODE_FAILURE`).
    """

    def __init__(self, nodes: int = 3, head_cpus: int = 0, system_config: dict[str, Any] | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"a local cluster needs at least 1 worker node, got nodes={nodes}.")
        self.n_nodes = nodes
        self.head_cpus = head_cpus
        self.system_config = dict(FAST_NODE_FAILURE if system_config is None else system_config)
        self.cluster: Cluster | None = None
        self.workers: list[Any] = []

    def start(self) -> LocalCluster:
        """Start the head and the worker nodes, and connect this process as the driver."""
        loopback_only()
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.head_cpus, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "_system_config": self.system_config})
        # Connect while the head is the only node: the driver attaches to a raylet on its own address,
        # and a driver attached to a worker node would die with it.
        ray.init(address=self.cluster.address, log_to_driver=False)
        self.workers = [self.add_node() for _ in range(self.n_nodes)]
        return self

    def add_node(self) -> Any:
        """One more one-CPU node (its raylet and workers are separate processes)."""
        if self.cluster is None:
            raise RuntimeError("start() the local cluster before adding nodes.")
        return self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")

    def node_id(self, node: Any) -> str:
        """The Ray node id of a worker node returned by :meth:`add_node`."""
        return str(node.node_id)

    def remove_node(self, node: Any) -> None:
        """Kill a node's raylet and every process on it at once (no graceful drain): a lost machine."""
        if self.cluster is None:
            raise RuntimeError("the local cluster is not running.")
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        """Disconnect and stop every process of the cluster."""
        if ray.is_initialized():
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None
            self.workers = []

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.shutdown()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()
