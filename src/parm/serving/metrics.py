"""Prometheus text exposition of the frontend's counters, latency histogram and queue depth."""

from __future__ import annotations

import bisect

from parm.serving.frontend import Frontend

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Cumulative histogram of answer latencies in seconds (Prometheus ``histogram`` type)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=False):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        return [*out, f"{name}_sum {self.sum}", f"{name}_count {self.count}"]


def render(frontend: Frontend, latency: LatencyHistogram, http_errors: int) -> str:
    """The ``/metrics`` page."""
    s = frontend.stats
    counters = [
        ("parm_requests_total", "Queries admitted by the frontend.", s.queries),
        ("parm_answers_total", "Queries answered.", s.answered),
        ("parm_degraded_answers_total", "Answers reconstructed by the decoder.", s.degraded),
        ("parm_failed_queries_total", "Queries answered with an error after every attempt failed.", s.failed),
        ("parm_coding_groups_total", "Coding groups encoded.", s.groups),
        ("parm_uncoded_queries_total", "Queries sent uncoded at the group-formation deadline.", s.uncoded),
        ("parm_resent_queries_total", "Re-sends after an instance failure.", s.resent),
        ("parm_cancelled_requests_total", "Straggler requests cancelled.", s.cancelled),
        ("parm_instance_errors_total", "Requests lost to an instance failure.", s.instance_errors),
        ("parm_http_client_errors_total", "HTTP requests refused with a 4xx status.", http_errors),
    ]
    lines: list[str] = []
    for name, doc, value in counters:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name} {value}"]
    gauges = [
        ("parm_queue_depth", "Requests outstanding on instances.", frontend.pool.queue_depth()),
        ("parm_pending_queries", "Queries admitted and not yet answered.", frontend.pending),
        ("parm_instances_alive", "Instances accepting requests.", sum(i.alive for i in frontend.pool.instances)),
    ]
    for name, doc, value in gauges:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {value}"]
    name = "parm_request_latency_seconds"
    lines += [f"# HELP {name} Latency from admission to answer.", f"# TYPE {name} histogram", *latency.lines(name)]
    return "\n".join(lines) + "\n"
