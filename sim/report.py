"""The fleet's live view and final report (text for people, JSON for machines)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from sim.stats import Stats


def build_report(stats: Stats, *, elapsed: float, scenario: str, seed: int) -> dict[str, Any]:
    overall = stats.overall()
    report: dict[str, Any] = {
        "scenario": scenario,
        "seed": seed,
        "duration_s": round(elapsed, 1),
        "stations": stats.stations,
        "connected": stats.events.get("connected_at_end", stats.connected),
        "ever_connected": stats.ever_connected,
        "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(sorted(stats.errors.items())),
        "messages": stats.messages,
        "messages_per_second": round(stats.messages / elapsed, 1) if elapsed else 0.0,
        "messages_by_action": {
            "sent": dict(sorted(stats.sent.items())),
            "received": dict(sorted(stats.received.items())),
        },
        "latency_ms": overall.summary(),
        "latency_by_action": {k: h.summary() for k, h in sorted(stats.latency.items())},
        "sessions": {
            "started": stats.sessions_started,
            "completed": stats.sessions_completed,
            "active": stats.active_sessions,
        },
        "energy_kwh": round(stats.energy_wh / 1000, 3),
        "events": dict(sorted(k for k in stats.events.items() if k[0] != "connected_at_end")),
        "recovery_s": stats.recovery_s,
    }
    if stats.rest_calls:
        report["rest"] = {
            "calls": dict(sorted(stats.rest_calls.items())),
            "latency_by_endpoint": {k: h.summary() for k, h in sorted(stats.rest_latency.items())},
        }
    return report


def live_view(stats: Stats, *, elapsed: float, rate: float, duration: float) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    overall = stats.overall()
    table.add_row("elapsed", f"{elapsed:,.0f} / {duration:,.0f} s")
    table.add_row("connected", f"{stats.connected:,} / {stats.stations:,}")
    table.add_row("active sessions", f"{stats.active_sessions:,}")
    table.add_row("sessions done", f"{stats.sessions_completed:,}")
    table.add_row("energy", f"{stats.energy_wh / 1000:,.1f} kWh")
    table.add_row("messages/s", f"{rate:,.0f}")
    table.add_row("messages", f"{stats.messages:,}")
    table.add_row(
        "round trip p50 / p99", f"{overall.percentile(0.5):.1f} / {overall.percentile(0.99):.1f} ms"
    )
    errors = sum(stats.errors.values())
    table.add_row("errors", f"[red]{errors:,}[/]" if errors else "0")
    return table


def report_tables(report: dict[str, Any]) -> RenderableType:
    summary = Table(
        title=f"cpms sim: {report['scenario']}, seed {report['seed']}", show_header=False
    )
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    latency = report["latency_ms"]
    for name, value in (
        ("stations", f"{report['stations']:,}"),
        ("connected at end", f"{report['connected']:,}"),
        ("duration", f"{report['duration_s']:,} s"),
        ("messages", f"{report['messages']:,}"),
        ("messages/s", f"{report['messages_per_second']:,}"),
        ("round trip p50/p95/p99/max", "{p50} / {p95} / {p99} / {max} ms".format(**latency)),
        ("sessions started / completed", "{started} / {completed}".format(**report["sessions"])),
        ("energy", f"{report['energy_kwh']:,} kWh"),
        ("errors", f"{report['errors']:,}"),
    ):
        summary.add_row(name, value)
    if report["recovery_s"] is not None:
        summary.add_row("reconnect-storm recovery", f"{report['recovery_s']} s")
    actions = Table(title="CALL round trips by action (ms)")
    for column in ("action", "sent", "p50", "p95", "p99", "max"):
        actions.add_column(column, justify="left" if column == "action" else "right")
    for action, figures in report["latency_by_action"].items():
        actions.add_row(
            action,
            f"{report['messages_by_action']['sent'].get(action, 0):,}",
            *(str(figures[k]) for k in ("p50", "p95", "p99", "max")),
        )
    parts: list[RenderableType] = [summary, actions]
    if report["messages_by_action"]["received"]:
        received = Table(title="commands from the central system")
        received.add_column("action")
        received.add_column("count", justify="right")
        for action, count in report["messages_by_action"]["received"].items():
            received.add_row(action, f"{count:,}")
        parts.append(received)
    if report["errors_by_kind"]:
        errors = Table(title="errors")
        errors.add_column("kind")
        errors.add_column("count", justify="right")
        for kind, count in report["errors_by_kind"].items():
            errors.add_row(kind, f"{count:,}")
        parts.append(errors)
    if "rest" in report:
        rest = Table(title="REST calls by endpoint (ms)")
        for column in ("endpoint", "calls", "p50", "p95", "p99", "max"):
            rest.add_column(column)
        for endpoint, figures in report["rest"]["latency_by_endpoint"].items():
            rest.add_row(
                endpoint,
                str(report["rest"]["calls"].get(endpoint, 0)),
                *(str(figures[k]) for k in ("p50", "p95", "p99", "max")),
            )
        parts.append(rest)
    return Group(*parts)
