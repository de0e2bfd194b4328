"""Where Ray replicas go: node-level placement of a coding group's members and parities, and node health.

Each instance's failure domain is its node, so the placement keeps model and parity replicas on
different nodes; the backend asks the GCS which nodes are alive or dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import ray


class Placed(Protocol):
    """What placement needs of an instance."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


def placement(instances: Sequence[Placed], nodes: Sequence[str]) -> dict[str, str]:
    """Node of each instance: models round-robin over some nodes, parities over the others.

    Parities get a share of the nodes proportional to their share of the instances (at least one),
    so that with k + r or more nodes no node holds both a member and a parity of one group. On one
    node there is nothing to spread: returns ``{}``.
    """
    if len(nodes) < 2:
        return {}
    models = [i for i in instances if i.role == "model"]
    parities = [i for i in instances if i.role == "parity"]
    n_parity_nodes = 0 if not parities else min(len(nodes) - 1, max(1, round(len(nodes) * len(parities)
                                                                          / len(instances))))
    model_nodes, parity_nodes = nodes[: len(nodes) - n_parity_nodes], nodes[len(nodes) - n_parity_nodes:]
    where = {inst.name: model_nodes[n % len(model_nodes)] for n, inst in enumerate(models)}
    where |= {inst.name: parity_nodes[n % len(parity_nodes)] for n, inst in enumerate(parities)}
    return where


def alive_nodes() -> list[str]:
    """Alive nodes that may hold replicas: every node but the driver's, when there are two or more others."""
    alive = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    others = [n for n in alive if n != ray.get_runtime_context().get_node_id()]
    return others if len(others) >= 2 else alive


def dead_nodes() -> set[str]:
    """Ids of the nodes the GCS has declared dead."""
    if not ray.is_initialized():  # stopping: a Ray call now would start a new local cluster
        return set()
    return {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
