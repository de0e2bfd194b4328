"""Frontend logic against fake in-process instances with delays and crashes."""

from __future__ import annotations

import asyncio

import pytest
import torch
from serving_fakes import FakeInstance, jitter

from parm.coding import CodeSpec, build_code, decoders, encoders
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstanceError, InstancePool

SHAPE = (1, 4, 4)


def make_pool(f, k: int, r: int, n_model: int, delays=None, capacity: int = 64) -> tuple[InstancePool, list]:
    insts = [FakeInstance(f"model-{i}", "model", f, (delays or {}).get(i, jitter(0.002, i))) for i in range(n_model)]
    insts += [FakeInstance(f"parity-{j}", "parity", _parity_f(f, k, j), jitter(0.002, 100 + j), parity_index=j)
              for j in range(r)]
    return InstancePool(insts, capacity=capacity), insts


def _parity_f(f, k: int, j: int):
    # For a linear F with bias b: F(sum_i a_i X_i) = sum_i a_i F(X_i) - (sum_i a_i - 1) b, so the ideal
    # parity model adds the bias back; the decoder then recovers the missing output exactly.
    from parm_coders._linear import vandermonde_coefficients

    coeffs = vandermonde_coefficients(k, j + 1)[j]
    lin = f[1]

    def parity(x: torch.Tensor) -> torch.Tensor:
        return f(x) + (coeffs.sum() - 1) * lin.bias

    return parity


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def fire(frontend: Frontend, xs: torch.Tensor, gap: float = 0.0):
    async def one(i: int):
        await asyncio.sleep(gap * i)
        return await frontend.predict(xs[i])

    results = await asyncio.gather(*(one(i) for i in range(len(xs))), return_exceptions=True)
    await frontend.close()
    return results


def test_every_query_answered_once_and_groups_spread(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    pool, insts = make_pool(linear_f, 2, 1, 4)
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=0.0))
    xs = torch.randn(40, *SHAPE)
    results = run(fire(frontend, xs))
    assert all(not isinstance(r, BaseException) for r in results)
    assert frontend.stats.answered == 40 and frontend.stats.queries == 40
    with torch.no_grad():
        truth = linear_f(xs)
    for res, want in zip(results, truth, strict=False):
        torch.testing.assert_close(res.output, want, rtol=1e-4, atol=1e-4)  # exact code: degraded too
    assert pool.queue_depth() == 0


def test_no_two_members_of_a_group_on_one_instance(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(3, 2), SHAPE, (5,))
    pool, insts = make_pool(linear_f, 3, 2, 3, capacity=4)
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=0.001))
    xs = torch.randn(30, *SHAPE)
    results = run(fire(frontend, xs))
    assert all(not isinstance(r, BaseException) for r in results)
    assert sum(len(i.seen) for i in insts[:3]) == 30
    index = {tuple(x.flatten().tolist()): n for n, x in enumerate(xs)}
    for inst in insts[:3]:
        groups = [index[tuple(x.flatten().tolist())] // 3 for x in inst.seen]
        assert len(groups) == len(set(groups)), f"{inst.name} got two members of one group: {groups}"


@pytest.mark.parametrize("grace", [0.0, 0.05])
def test_straggler_is_decoded_and_cancelled(linear_f, grace: float) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    slow = {0: lambda n: 1.0}  # model-0 never answers in time
    pool, insts = make_pool(linear_f, 2, 1, 2, delays=slow)
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=grace, group_timeout_s=1.0))
    xs = torch.randn(6, *SHAPE)
    results = run(fire(frontend, xs, gap=0.003))
    degraded = [r for r in results if r.degraded]
    assert len(degraded) == 3 and frontend.stats.degraded == 3
    assert all(r.latency_s < 0.5 for r in results)
    assert all(r.latency_s >= grace for r in degraded)
    assert len(insts[0].cancelled) == 3 and not insts[0].served


def test_degraded_answers_equal_the_decoders_output() -> None:
    torch.manual_seed(1)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh())  # nonlinear F
    fp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    code = build_code("learned", "learned", CodeSpec(2, 1), SHAPE, (5,))
    insts = [FakeInstance("model-0", "model", f, lambda n: 0.001), FakeInstance("model-1", "model", f, lambda n: 1.0),
             FakeInstance("parity-0", "parity", fp, lambda n: 0.001, parity_index=0)]
    frontend = Frontend(InstancePool(insts), code, FrontendConfig(decode_grace_s=0.0))
    xs = torch.randn(2, *SHAPE)
    a, b = run(fire(frontend, xs))
    assert not a.degraded and b.degraded
    with torch.no_grad():
        outputs = torch.stack([f(xs[:1])[0], torch.zeros(5)])[None]
        parity = fp(code.encode(xs[None])[0])[None]
        want = code.decode(outputs, parity, torch.tensor([[True, False, True]]))[0, 1]
    torch.testing.assert_close(b.output, want)


def _pairs() -> list[tuple[str, str]]:
    """Every registered (encoder, decoder) pair that the decoder accepts (a plugin may add either)."""
    pairs = []
    for e in encoders.names():
        for d in decoders.names():
            try:
                build_code(e, d, CodeSpec(2, 1), SHAPE, (5,))
            except ValueError:
                continue  # the decoder refuses this encoder at construction, as documented
            pairs.append((e, d))
    return pairs


@pytest.mark.parametrize(("enc", "dec"), _pairs())
@pytest.mark.parametrize(("k", "r"), [(2, 1), (4, 2)])
def test_every_registered_coder_serves(linear_f, enc: str, dec: str, k: int, r: int) -> None:
    code = build_code(enc, dec, CodeSpec(k, r), SHAPE, (5,))
    pool, _ = make_pool(linear_f, k, r, k + 1, delays={0: jitter(0.002, 0, slow_every=2, slow=0.2)})
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=0.001))
    results = run(fire(frontend, torch.randn(4 * k, *SHAPE)))
    assert all(not isinstance(r, BaseException) and r.output.shape == (5,) for r in results)
    assert frontend.stats.answered == 4 * k


def test_group_formation_deadline_sends_a_lone_query_uncoded(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    pool, insts = make_pool(linear_f, 2, 1, 2)
    frontend = Frontend(pool, code, FrontendConfig(group_timeout_s=1.0))

    async def lone():
        res = await frontend.predict(torch.randn(*SHAPE))
        still_forming = frontend.stats.uncoded == 0  # answered before the group's deadline: never held
        await asyncio.sleep(1.2)
        await frontend.close()
        return res, still_forming

    res, answered_while_forming = run(lone())
    # Sent at once, not held for a group (the answer came while the group was still forming; judged by
    # order, not by a latency bound a loaded machine could miss); closed uncoded at the deadline.
    assert answered_while_forming and not res.coded and not res.degraded
    assert frontend.stats.uncoded == 1 and frontend.stats.groups == 0
    assert not insts[2].seen  # no parity for an uncoded query


def test_crash_mid_run_loses_no_query(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    pool, insts = make_pool(linear_f, 2, 1, 3, delays={i: jitter(0.01, i) for i in range(3)})
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=0.002))
    xs = torch.randn(60, *SHAPE)

    async def scenario():
        asyncio.get_running_loop().call_later(0.05, insts[0].crash, 0.05)
        asyncio.get_running_loop().call_later(0.07, insts[3].crash, 0.05)  # the parity dies too: re-send
        return await fire(frontend, xs, gap=0.002)

    results = run(scenario())
    assert all(not isinstance(r, BaseException) for r in results)
    assert frontend.stats.answered == 60 and frontend.stats.instance_errors > 0
    with torch.no_grad():
        torch.testing.assert_close(torch.stack([r.output for r in results]), linear_f(xs), rtol=1e-4, atol=1e-4)


def test_query_deadline_triggers_decoding(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    pool, _ = make_pool(linear_f, 2, 1, 2, delays={0: lambda n: 20.0})
    frontend = Frontend(pool, code, FrontendConfig(decode_grace_s=10.0, query_deadline_s=0.05))
    results = run(fire(frontend, torch.randn(2, *SHAPE)))
    assert sum(r.degraded for r in results) == 1
    assert max(r.latency_s for r in results) < 5.0  # decoded at the deadline, long before grace or straggler


@pytest.mark.parametrize("policy", ["plain", "hedge"])
def test_plain_and_hedge_answer_everything(linear_f, policy: str) -> None:
    # Hedged, a straggler (10 s) is never waited for: a bound generous enough for a loaded machine.
    slow = 10.0 if policy == "hedge" else 0.3
    pool, insts = make_pool(linear_f, 2, 0, 3, delays={0: jitter(0.002, 0, slow_every=3, slow=slow)})
    frontend = Frontend(pool, None, FrontendConfig(policy=policy, hedge_delay_s=0.01))
    results = run(fire(frontend, torch.randn(30, *SHAPE), gap=0.001))
    assert frontend.stats.answered == 30 and not any(r.degraded for r in results)
    if policy == "hedge":
        assert frontend.stats.hedged > 0 and max(r.latency_s for r in results) < 5.0


def test_all_attempts_failing_answers_with_an_error(linear_f) -> None:
    insts = [FakeInstance("model-0", "model", linear_f, lambda n: 0.001)]
    insts[0].crash()
    frontend = Frontend(InstancePool(insts), None, FrontendConfig(policy="plain", max_attempts=2))

    async def go():
        task = asyncio.ensure_future(frontend.predict(torch.randn(*SHAPE)))
        await asyncio.sleep(0.05)
        await frontend.close()
        return await asyncio.gather(task, return_exceptions=True)

    (res,) = run(go())
    assert isinstance(res, InstanceError)


def test_bad_configuration_is_refused(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(3, 1), SHAPE, (5,))
    pool, _ = make_pool(linear_f, 3, 1, 2)
    with pytest.raises(ValueError, match="needs >= 3 model instances"):
        Frontend(pool, code)
    with pytest.raises(ValueError, match="policy must be"):
        FrontendConfig(policy="magic")  # type: ignore[arg-type]
    pool, _ = make_pool(linear_f, 3, 1, 3)
    with pytest.raises(ValueError, match="must have shape"):
        asyncio.run(Frontend(pool, code).predict(torch.randn(2, 2)))


class _OnNode(FakeInstance):
    """A fake instance on a named node: instances can share a failure domain, as Ray replicas do."""

    shares_domains = True

    def __init__(self, *args, node: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.node = node

    @property
    def domain(self) -> str:
        return self.node


@pytest.mark.parametrize("model_nodes", [["a", "a", "b", "b"], ["a", "a", "a", "a"]])
def test_group_members_and_parities_land_on_distinct_nodes(linear_f, model_nodes) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    # Pool order puts two same-node instances first: picking by instance alone would pair them.
    models = [_OnNode(f"model-{i}", "model", linear_f, jitter(0.001, i), node=n) for i, n in enumerate(model_nodes)]
    parity = _OnNode("parity-0", "parity", _parity_f(linear_f, 2, 0), jitter(0.001, 9), parity_index=0, node="c")
    frontend = Frontend(InstancePool([*models, parity]), code, FrontendConfig(decode_grace_s=0.002))
    xs = torch.arange(1, 41, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous()
    results = run(fire(frontend, xs, gap=0.004))
    assert all(not isinstance(r, BaseException) for r in results)
    node_of = {float(x.flatten()[0]): inst.node for inst in models for x in inst.seen}
    assert len(node_of) == 40 and frontend.stats.resent == 0
    pairs = [(node_of[2 * i + 1.0], node_of[2 * i + 2.0]) for i in range(20)]
    if len(set(model_nodes)) > 1:
        assert all(a != b for a, b in pairs), pairs  # node-level anti-affinity
    else:  # one node holds every model: groups still spread over distinct instances
        members = {float(x.flatten()[0]): inst.name for inst in models for x in inst.seen}
        assert all(members[2 * i + 1.0] != members[2 * i + 2.0] for i in range(20))


def test_hedge_spare_backs_up_only_onto_an_idle_instance(linear_f) -> None:
    slow = jitter(0.002, 0, slow_every=1, slow=0.15)
    # Both instances slow and busy: no idle instance, so no backup however late the answers are.
    pool, _ = make_pool(linear_f, 2, 0, 2, delays={0: slow, 1: slow})
    frontend = Frontend(pool, None, FrontendConfig(policy="hedge-spare", hedge_delay_s=0.01))
    results = run(fire(frontend, torch.randn(4, *SHAPE)))
    assert frontend.stats.answered == 4 and frontend.stats.hedged == 0
    # One slow instance among idle ones: its queries are backed up and answered early.
    pool, _ = make_pool(linear_f, 2, 0, 3, delays={0: jitter(0.002, 0, slow_every=2, slow=1.0)})
    frontend = Frontend(pool, None, FrontendConfig(policy="hedge-spare", hedge_delay_s=0.01))
    results = run(fire(frontend, torch.randn(20, *SHAPE), gap=0.01))
    assert frontend.stats.hedged > 0 and max(r.latency_s for r in results) < 0.5  # the slow answers take 1 s
    assert frontend.stats.requests == 20 + frontend.stats.hedged


def test_parm_hedge_backs_up_a_member_whose_group_cannot_be_decoded(linear_f) -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    very_slow = jitter(0.002, 0, slow_every=1, slow=0.5)
    # Model 0 and the parity instance are both slow: a group with a member on model 0 cannot be decoded.
    pool, insts = make_pool(linear_f, 2, 1, 3, delays={0: very_slow})
    insts[-1].delay = very_slow
    frontend = Frontend(pool, code, FrontendConfig(policy="parm-hedge", hedge_delay_s=0.02, decode_grace_s=0.002))
    results = run(fire(frontend, torch.randn(6, *SHAPE), gap=0.005))
    assert frontend.stats.answered == 6 and frontend.stats.hedged > 0
    assert not any(r.degraded for r in results) and max(r.latency_s for r in results) < 0.3
    # Fast parity: groups decode before the hedge delay, so nothing is backed up.
    pool, _ = make_pool(linear_f, 2, 1, 3, delays={0: very_slow})
    frontend = Frontend(pool, code, FrontendConfig(policy="parm-hedge", hedge_delay_s=0.05, decode_grace_s=0.002))
    results = run(fire(frontend, torch.randn(6, *SHAPE), gap=0.005))
    assert frontend.stats.hedged == 0 and any(r.degraded for r in results)
