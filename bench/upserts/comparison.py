"""The upserts benchmark against the reference peer: its figures, the targets derived from them,
whether each configuration met them, and the CPU ceiling the service's own cost implies."""

import os
import statistics

from bench.stack import StackConfig
from bench.upserts.cpu import service_cpu_ms
from bench.upserts.runs import ASYNC, ASYNC_TOKEN, HOT, HOT_KEYS, SYNC, SYNC_TOKEN, Run
from bench.upserts.summary import span, verdict

# The reference peer: a synchronous, non-queued FastAPI + asyncpg service on this machine kind.
PEER_RPS, PEER_P50_MS, PEER_P99_MS = 155.0, 190.0, 430.0
INTEGRATOR_RPS = (65.0, 110.0)  # agents/s integrators reach doing GET-then-POST
SYNC_TARGET_RPS = 2 * PEER_RPS
ASYNC_TARGET_RPS = 4 * PEER_RPS


def _config_lines(config: StackConfig, mine: list[Run]) -> list[str]:
    """The list items for one stack configuration: each mode against its target."""
    label = config.label
    sync = [r for r in mine if r.mode == SYNC]
    rates = [r.load.rate for r in sync]
    p99s = [r.load.percentile_ms(0.99) for r in sync]
    lines = [
        f"- {label}, sync-wait: {span(rates)} req/s = "
        f"{statistics.median(rates) / PEER_RPS:.1f}x the peer, p99 {span(p99s)} ms. "
        f"Target (>= {SYNC_TARGET_RPS:.0f} req/s and p99 < {PEER_P99_MS:.0f} ms) "
        + verdict(
            [
                r.load.rate >= SYNC_TARGET_RPS and p < PEER_P99_MS
                for r, p in zip(sync, p99s, strict=True)
            ]
        )
        + "."
    ]
    asyn = [r for r in mine if r.mode == ASYNC]
    accepted = [r.load.rate for r in asyn]
    applied = [r.applied_rate for r in asyn]
    lines.append(
        f"- {label}, respond-async: accepted {span(accepted)} req/s "
        f"({statistics.median(accepted) / PEER_RPS:.1f}x), applied end to end "
        f"{span(applied)} jobs/s ({statistics.median(applied) / PEER_RPS:.1f}x). "
        f"Target (>= {ASYNC_TARGET_RPS:.0f}/s) on acceptance "
        + verdict([v >= ASYNC_TARGET_RPS for v in accepted])
        + ", end to end "
        + verdict([v >= ASYNC_TARGET_RPS for v in applied])
        + "."
    )
    hot = [r for r in mine if r.mode == HOT]
    hot_rates = [r.load.rate for r in hot]
    lines.append(
        f"- {label}, sync-wait on {HOT_KEYS} hot keys: {span(hot_rates)} req/s "
        f"({statistics.median(hot_rates) / PEER_RPS:.1f}x the peer), p99 "
        f"{span([r.load.percentile_ms(0.99) for r in hot])} ms."
    )
    lines.append(
        f"- Against integrators' GET-then-POST ({INTEGRATOR_RPS[0]:.0f}-"
        f"{INTEGRATOR_RPS[1]:.0f} agents/s), sync-wait agent upserts run "
        f"{statistics.median(rates) / INTEGRATOR_RPS[1]:.1f}-"
        f"{statistics.median(rates) / INTEGRATOR_RPS[0]:.1f}x faster."
    )
    return lines


def comparison(runs: list[Run]) -> str:
    """The reference and targets, then each configuration's modes against them."""
    lines = [
        f"Reference: a synchronous, non-queued FastAPI + asyncpg peer on this machine kind answers "
        f"about {PEER_RPS:.0f} user upserts/s at p50 {PEER_P50_MS:.0f} ms / p99 "
        f"{PEER_P99_MS:.0f} ms; integrators doing GET-then-POST manage "
        f"{INTEGRATOR_RPS[0]:.0f}-{INTEGRATOR_RPS[1]:.0f} agents/s. Targets: sync-wait "
        f">= {SYNC_TARGET_RPS:.0f} req/s (2x) with p99 < {PEER_P99_MS:.0f} ms; respond-async "
        f">= {ASYNC_TARGET_RPS:.0f} req/s (4x).",
        "",
    ]
    for config in dict.fromkeys(r.config for r in runs):  # in the order they ran
        lines += _config_lines(config, [r for r in runs if r.config == config])
        lines += _token_cost(config, [r for r in runs if r.config == config])
    return "\n".join(lines)


def _token_cost(config: StackConfig, mine: list[Run]) -> list[str]:
    """What an integrator's token (scopes, ownership, a rate limit above the load) costs
    against the bootstrap token, mode by mode, from the medians of the same run."""
    lines = []
    for plain, tokened, measure in (
        (SYNC, SYNC_TOKEN, "req/s"),
        (ASYNC, ASYNC_TOKEN, "jobs/s applied"),
    ):
        single = [r.applied_rate for r in mine if r.mode == plain]
        integrator = [r.applied_rate for r in mine if r.mode == tokened]
        if not single or not integrator:
            continue
        cost = 1 - statistics.median(integrator) / statistics.median(single)
        lines.append(
            f"- {config.label}, {plain} with an integrator's token: {span(integrator)} "
            f"{measure} against {span(single)} with the bootstrap token: "
            f"{cost * 100:+.1f}% cost (target: at most 5%)."
        )
    return lines


def ceiling(runs: list[Run]) -> str:
    """The req/s the service's own CPU cost per request allows on this machine's cores."""
    sync = [r for r in runs if r.mode == SYNC]
    asyn = [r for r in runs if r.mode == ASYNC]
    cores = os.cpu_count() or 1
    sync_ms = statistics.median(service_cpu_ms(r) for r in sync)
    async_ms = statistics.median(service_cpu_ms(r) for r in asyn)
    return (
        f"The service itself spends a median {sync_ms:.1f} CPU-ms per sync-wait request and "
        f"{async_ms:.1f} per respond-async request (accept, apply and the drain messages). "
        f"On {cores} cores with nothing else running, not even the load generator, that caps "
        f"sync-wait at about {cores * 1000 / sync_ms:.0f} req/s and respond-async end to end at "
        f"about {cores * 1000 / async_ms:.0f} jobs/s. The targets need at most "
        f"{cores * 1000 / SYNC_TARGET_RPS:.1f} and {cores * 1000 / ASYNC_TARGET_RPS:.1f} CPU-ms "
        f"per request on this machine kind, and less with a load generator beside it."
    )
