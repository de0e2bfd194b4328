"""The ray backend on a local multi-node cluster: placement, health, crashes, kills and node loss.

One cluster (a head and three one-CPU nodes on 127.0.0.1) and one deployment of 4 F + 2 F_P serve
every test of the module, on one event loop; the test that removes a node runs last. Skipped with a
reason when Ray Serve is not installed (``pip install 'parity-models[ray]'``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from serving_fakes import write_checkpoints

pytest.importorskip("ray.serve", reason="the ray backend needs Ray Serve: pip install 'parity-models[ray]'")

from parm.artifacts import load_parity  # noqa: E402
from parm.models.checkpoint import load_model  # noqa: E402
from parm.serving.frontend import Frontend, FrontendConfig, Prediction  # noqa: E402
from parm.serving.instance import InstancePool  # noqa: E402
from parm.serving.proccpu import cpu_snapshot, cpu_split, thread_split  # noqa: E402
from parm.serving.raybench import SCENARIOS, render  # noqa: E402
from parm.serving.raycluster import LocalCluster  # noqa: E402
from parm.serving.raynodes import placement  # noqa: E402
from parm.serving.rayserve import RayBackend, RayInstance, RaySettings  # noqa: E402

# Generous: on this 2-core machine shared with other jobs a healthy answer takes 5-50 ms; a query
# that waited for a restart (what these tests rule out) takes 5 s or more. A lost node is noticed
# after the GCS's health checks fail (about 1.5 s here); a query that the group cannot decode (an
# uncoded one) is re-sent then.
LATENCY_BOUND_S = 2.0
NODE_LOSS_BOUND_S = 3.0
# Ray fails a call to a dead actor within milliseconds; Serve's restart takes seconds (a new worker
# process imports torch and parm). A bound between the two shows the death was noticed by the
# replica's watch call, not by a poll of Serve or by the restart.
DEATH_NOTICED_BOUND_S = 1.5


class Deployed:
    """The module's cluster, backend and event loop."""

    def __init__(self, cluster: LocalCluster, backend: RayBackend, loop: asyncio.AbstractEventLoop,
                 base: str, parity: str) -> None:
        self.cluster, self.backend, self.loop = cluster, backend, loop
        self.base, self.parity = base, parity
        self.code = load_parity(parity).code

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 240) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    def instance(self, name: str) -> RayInstance:
        return next(i for i in self.backend.instances if i.name == name)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[Deployed]:
    base, parity = write_checkpoints(tmp_path_factory.mktemp("ray"))
    loop = asyncio.new_event_loop()
    with LocalCluster(nodes=3) as cluster:
        backend = RayBackend.for_code(base, parity, n_model=4, n_parity=2, max_batch=4, service_time_s=0.002,
                                      settings=RaySettings(monitor_period_s=0.5))
        try:
            loop.run_until_complete(asyncio.wait_for(backend.start(), 300))
            yield Deployed(cluster, backend, loop, base, parity)
        finally:
            loop.run_until_complete(asyncio.wait_for(backend.stop(), 120))
            loop.close()


def _serve(d: Deployed, n: int, fault: Callable[[], Coroutine[Any, Any, None]] | None,
           gap_s: float = 0.01) -> tuple[list[Prediction | BaseException], Frontend]:
    """``n`` random queries ``gap_s`` apart; ``fault`` runs after a quarter of them were sent."""
    xs = torch.randn(n, 1, 28, 28)

    async def go() -> tuple[list[Prediction | BaseException], Frontend]:
        pool = InstancePool(d.backend.instances)
        d.backend.on_change[:] = [pool.notify]
        frontend = Frontend(pool, d.code, FrontendConfig(decode_grace_s=0.002))

        async def one(i: int) -> Prediction:
            await asyncio.sleep(gap_s * i)
            return await frontend.predict(xs[i])

        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        if fault is not None:
            await asyncio.sleep(gap_s * n / 4)
            await fault()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await frontend.close()
        return results, frontend

    results, frontend = d.run(go())
    model, _ = load_model(d.base)
    with torch.no_grad():
        want = model.eval()(xs)
    lost = [r for r in results if isinstance(r, BaseException)]
    assert not lost and frontend.stats.failed == 0, lost[:3]
    for res, w in zip(results, want, strict=True):
        assert isinstance(res, Prediction)
        if not res.degraded:
            torch.testing.assert_close(res.output, w, rtol=1e-5, atol=1e-5)
    return results, frontend


def _worst_s(results: list[Prediction | BaseException]) -> float:
    return max(r.latency_s for r in results if isinstance(r, Prediction))


def _wait_for(d: Deployed, condition: Callable[[], bool], timeout_s: float = 120) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.1)

    d.run(poll(), timeout_s)


def _wait_back(d: Deployed, inst: RayInstance, timeout_s: float = 120) -> None:
    _wait_for(d, lambda: inst.alive, timeout_s)


def test_placement_keeps_models_and_parities_on_separate_nodes() -> None:
    specs = RayBackend.for_code("b.pt", "p.pt", n_model=4, n_parity=2).instances
    where = placement(specs, ["a", "b", "c"])
    models = {where[i.name] for i in specs if i.role == "model"}
    parities = {where[i.name] for i in specs if i.role == "parity"}
    assert models == {"a", "b"} and parities == {"c"}
    assert [where[f"model-{i}"] for i in range(4)] == ["a", "b", "a", "b"]
    assert placement(specs, ["only"]) == {}


def test_ray_latency_page_is_rendered_from_its_json() -> None:
    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    data = json.loads((results / "ray_latency.json").read_text())
    assert (results / "ray_latency.md").read_text() == render(data)
    assert {r["scenario"] for r in data["rows"] if r["backend"] == "ray"} == set(SCENARIOS)


def test_cpu_split_counts_each_process_once_and_new_ones_whole() -> None:
    before = {1: ("driver", 1.0), 2: ("gcs", 5.0), 3: ("serve replicas", 2.0)}
    after = {1: ("driver", 1.5), 2: ("gcs", 5.25), 4: ("serve replicas", 0.75)}  # 3 died, 4 was started
    assert cpu_split(before, after) == {"serve replicas": 0.75, "driver": 0.5, "gcs": 0.25}
    threads = thread_split({(1, 1): ("python", 1.0)}, {(1, 1): ("python", 1.25), (1, 2): ("worker.io", 0.5)},
                           {1: "driver"})
    assert threads == {"driver: worker.io": 0.5, "driver: python": 0.25}
    assert cpu_snapshot()[os.getpid()][0] == "driver"


def test_serve_config_exposes_ray_actor_options_and_replica_counts() -> None:
    from omegaconf import OmegaConf

    from parm.pipeline import compose

    cfg = compose(["serve.backend=ray", "serve.ray.actor_options.num_gpus=1",
                   "+serve.ray.actor_options.resources.accelerator=1", "serve.model_instances=8"], config_name="serve")
    ray_cfg = OmegaConf.to_container(cfg.serve.ray, resolve=True)
    assert isinstance(ray_cfg, dict)
    settings = RaySettings(**ray_cfg)
    assert settings.actor_options == {"num_cpus": 0, "num_gpus": 1, "resources": {"accelerator": 1}}
    backend = RayBackend.for_code("b.pt", "p.pt", cfg.serve.model_instances, cfg.serve.parity_instances,
                                  settings=settings)
    assert [i.role for i in backend.instances].count("model") == 8 and len(backend.instances) == 10


def test_ray_settings_reject_unknown_actor_options() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_cpu'\].*num_cpus"):
        RaySettings(actor_options={"num_cpu": 1})
    with pytest.raises(ValueError, match="positive health-check"):
        RaySettings(monitor_period_s=0)
    with pytest.raises(ValueError, match="positive health-check.*shutdown_poll_s=0"):
        RaySettings(shutdown_poll_s=0)


@pytest.mark.slow
def test_learning_a_code_parity_replica_gets_f_through_the_object_store(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A code=lac parity.pt references F's file; its parity replicas get F's bytes beside it, not a path."""
    from parm.artifacts import BASE_PARITY_SPEC, code_record, save_parity
    from parm.coding import CodeSpec, build_code
    from parm.serving import rayreplica, rayserve
    from parm.serving.worker import WorkerSpec

    plain_base, plain_parity = write_checkpoints(tmp_path)
    f, header = load_model(plain_base)
    code = build_code("learned", "learned", CodeSpec(2), (1, 28, 28), (10,))
    lac = save_parity(tmp_path / "lac.pt", [f], BASE_PARITY_SPEC, code, code_record(code, {}, {}), (1, 28, 28), (10,),
                      meta={"base": plain_base})
    specs = [WorkerSpec("model-0", plain_base), WorkerSpec("parity-0", str(lac), parity_index=0, base=plain_base),
             WorkerSpec("parity-1", plain_parity, parity_index=0, base=plain_base)]
    monkeypatch.setattr(rayserve.ray, "put", lambda blob: ("ref", blob))
    refs = rayserve._put_artifacts(specs)
    assert [len(refs[name]) for name in ("model-0", "parity-0", "parity-1")] == [1, 2, 1]
    assert refs["parity-0"][1] is refs["model-0"][0], "F's bytes are put once, shared with F's replicas"
    Path(plain_base).rename(tmp_path / "elsewhere.pt")  # the replica must not read the recorded path
    monkeypatch.setattr(rayreplica.ray, "get", lambda ref: ref[1])
    replica = rayreplica.ParmReplica(specs[1], refs["parity-0"])
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(replica.model(x), f.eval()(x)), "the parity replica runs F itself"


def test_replicas_sit_on_their_nodes_and_answer_from_the_object_store(deployed: Deployed) -> None:
    nodes = {deployed.cluster.node_id(n) for n in deployed.cluster.workers}
    where = {i.name: i.node for i in deployed.backend.instances}
    assert set(where.values()) == nodes  # every worker node holds replicas, the head none
    models = {where[f"model-{i}"] for i in range(4)}
    assert len(models) == 2 and where["parity-0"] == where["parity-1"] and where["parity-0"] not in models
    assert len({i.pid for i in deployed.backend.instances}) == 6  # one process per instance
    results, frontend = _serve(deployed, 40, None)
    assert frontend.stats.answered == 40 and frontend.stats.instance_errors == 0


@pytest.mark.slow
def test_cluster_listens_on_loopback_only(deployed: Deployed) -> None:
    listening = _listening_addresses(_descendants(os.getpid()))
    assert listening, "found no listening socket of the cluster's processes"
    exposed = sorted((addr, port) for addr, port in listening if addr not in ("127.0.0.1", "::1"))
    assert not exposed, exposed


@pytest.mark.slow
def test_replica_crash_loses_nothing_and_never_waits_for_the_restart(deployed: Deployed) -> None:
    victim = deployed.instance("model-1")
    downs = victim.downs

    async def crash() -> None:
        await asyncio.gather(victim.call("crash"), return_exceptions=True)

    results, _ = _serve(deployed, 80, crash)
    assert victim.downs == downs + 1  # the crash call itself failed: marked down at once
    assert _worst_s(results) < LATENCY_BOUND_S
    _wait_back(deployed, victim)


@pytest.mark.slow
def test_replica_kill_loses_nothing_and_never_waits_for_the_restart(deployed: Deployed) -> None:
    victim = deployed.instance("model-2")
    downs, pid = victim.downs, victim.pid
    assert pid is not None

    async def kill() -> None:
        os.kill(pid, signal.SIGKILL)

    results, _ = _serve(deployed, 80, kill)
    assert _worst_s(results) < LATENCY_BOUND_S
    _wait_for(deployed, lambda: victim.downs == downs + 1, 30)
    _wait_back(deployed, victim)
    assert victim.pid != pid


@pytest.mark.slow
def test_idle_replica_death_is_noticed_at_once_not_at_its_restart(deployed: Deployed) -> None:
    """No query in flight: the replica's watch call alone marks it down, long before Serve restarts it."""
    victim = deployed.instance("model-3")
    downs, pid = victim.downs, victim.pid
    assert pid is not None and victim.alive
    # The backend's monitor only looks for dead nodes (this one's is alive) and probes down instances.
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _wait_for(deployed, lambda: victim.downs == downs + 1, 30)
    noticed_s = time.monotonic() - t0
    assert noticed_s < DEATH_NOTICED_BOUND_S, f"noticed {noticed_s:.2f} s after the kill"
    assert not victim.alive
    results, frontend = _serve(deployed, 20, None)  # new queries avoid it: none waits for the restart
    assert _worst_s(results) < LATENCY_BOUND_S and frontend.stats.instance_errors == 0
    _wait_back(deployed, victim)
    assert victim.pid != pid


@pytest.mark.slow
def test_node_removal_loses_nothing_and_replicas_move(deployed: Deployed) -> None:
    cluster = deployed.cluster
    node = next(n for n in cluster.workers if cluster.node_id(n) == deployed.instance("model-0").node)
    gone = cluster.node_id(node)
    victims = [i for i in deployed.backend.instances if i.node == gone]
    assert {i.name for i in victims} == {"model-0", "model-2"}
    downs = {i.name: i.downs for i in victims}

    async def remove() -> None:
        await asyncio.get_running_loop().run_in_executor(None, cluster.remove_node, node)

    t0 = time.monotonic()
    results, _ = _serve(deployed, 120, remove)
    assert _worst_s(results) < NODE_LOSS_BOUND_S
    _wait_for(deployed, lambda: all(i.downs > downs[i.name] for i in victims), 30)
    for inst in victims:
        _wait_back(deployed, inst)
        assert inst.node != gone  # restarted on another node (the fallback of its label selector)
    assert time.monotonic() - t0 < 180


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(children)
        frontier += children
    return found


def _listening_addresses(pids: set[int]) -> set[tuple[str, int]]:
    """``(address, port)`` of every TCP socket in LISTEN state held by ``pids`` (from /proc, as ss does)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    hexaddr, port = cols[1].split(":")
                    found.add((_address(hexaddr, width), int(port, 16)))
    return found


def _address(hexaddr: str, width: int) -> str:
    import ipaddress
    import socket

    raw = bytes.fromhex(hexaddr)
    # /proc stores each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw)
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)
