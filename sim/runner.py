"""Run a fleet in this process or spread over worker processes, with a live view and a report.

Workers are ``cpms sim`` processes each given a shard of the stations (``--shard K/W``) and
``--stream``: they print a JSON snapshot of their counters twice a second and a final one at the
end, and the parent adds them up (latency histograms merge bucket by bucket).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import trio
from rich.console import Console
from rich.live import Live

from cpms.kernel.gc_tuning import run_gc_maintenance, tune_gc
from sim.fleet import Fleet, FleetOptions
from sim.report import live_view
from sim.stats import Stats


class SimError(Exception):
    """A problem the user can fix (an unreachable server, ...): shown without a traceback."""


async def check_reachable(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise SimError(f"--url must be ws://host:port/path or wss://..., not {url!r}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(parts.hostname, port)
    except (OSError, trio.TooSlowError) as exc:
        raise SimError(f"cannot reach {parts.hostname}:{port} ({exc or 'timed out'})") from None
    await stream.aclose()


async def _until_interrupted(stop: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop()
            return


async def _show_live(
    console: Console, current: Callable[[], Stats], duration: float, began: float
) -> None:
    last_messages, last_at = 0, trio.current_time()
    rate = 0.0
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            await trio.sleep(0.5)
            stats, now = current(), trio.current_time()
            rate = (stats.messages - last_messages) / max(now - last_at, 1e-6)
            last_messages, last_at = stats.messages, now
            live.update(live_view(stats, elapsed=now - began, rate=rate, duration=duration))


async def run_local(
    options: FleetOptions, *, console: Console | None = None, stream: bool = False
) -> tuple[Stats, float]:
    """Run the fleet here; ``console`` shows the live view, ``stream`` prints snapshots."""
    await check_reachable(options.url)
    fleet = Fleet(options)
    began = trio.current_time()
    # thousands of idle connections: the same collector pacing as the server (cpms.kernel.gc_tuning)
    tune_gc(True)
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_gc_maintenance, done)
        nursery.start_soon(_until_interrupted, fleet.stop.set)
        if console is not None:
            nursery.start_soon(_show_live, console, lambda: fleet.stats, options.duration, began)
        if stream:
            nursery.start_soon(_stream, fleet.stats)
        await fleet.run()
        done.set()
        nursery.cancel_scope.cancel()
    if stream:
        _emit("final", fleet.stats)
    return fleet.stats, trio.current_time() - began


def _emit(kind: str, stats: Stats) -> None:
    sys.stdout.write(json.dumps({kind: stats.to_json()}) + "\n")
    sys.stdout.flush()


async def _stream(stats: Stats) -> None:
    while True:
        await trio.sleep(0.5)
        _emit("snapshot", stats)


def worker_args(options: FleetOptions, shard: int, shards: int) -> list[str]:
    args = [
        sys.executable, "-m", "cpms", "sim",
        "--url", options.url,
        "--stations", str(options.stations),
        "--connectors", str(options.connectors),
        "--prefix", options.prefix,
        "--duration", str(options.duration),
        "--ramp", str(options.ramp),
        "--scenario", options.scenario,
        "--meter-interval", str(options.meter_interval),
        "--seed", str(options.seed),
        "--idle-mean", str(options.idle_mean),
        "--speed", str(options.time_scale),
        "--shard", f"{shard}/{shards}",
        "--stream",
    ]  # fmt: skip
    for tag in options.tags:
        args += ["--tag", tag]
    if options.drivers is not None:
        # all the run's drivers (each worker takes its share); the secrets go by environment
        args += ["--rest-url", options.drivers.rest_url, "--drivers", str(options.drivers.drivers)]
    return args


async def run_workers(
    options: FleetOptions, workers: int, *, console: Console | None = None
) -> tuple[Stats, float]:
    """Run the fleet as ``workers`` processes and add up what they report."""
    await check_reachable(options.url)
    latest: dict[int, Stats] = {}
    final: dict[int, Stats] = {}
    processes: list[trio.Process] = []
    began = trio.current_time()

    def merged() -> Stats:
        total = Stats()
        for shard in range(workers):
            part = final.get(shard) or latest.get(shard)
            if part is not None:
                total.merge(part)
        return total

    async def worker(shard: int) -> None:
        # the stations' password goes by environment, never on a command line others can see
        password = {"CPMS_SIM_PASSWORD": options.password} if options.password else {}
        process = await trio.lowlevel.open_process(
            worker_args(replace(options, shard=shard, shards=workers), shard, workers),
            stdout=subprocess.PIPE,
            env={**os.environ, **password},
        )
        processes.append(process)
        assert process.stdout is not None
        buffer = b""
        try:
            while True:
                chunk = await process.stdout.receive_some(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    message: dict[str, Any] = json.loads(line)
                    for kind, data in message.items():
                        (final if kind == "final" else latest)[shard] = Stats.from_json(data)
            await process.wait()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await process.wait()
        if process.returncode != 0 or shard not in final:
            raise SimError(f"worker {shard} ended with exit code {process.returncode}")

    async with trio.open_nursery() as nursery:
        if console is not None:
            nursery.start_soon(_show_live, console, merged, options.duration, began)
        async with trio.open_nursery() as running:
            for shard in range(workers):
                running.start_soon(worker, shard)
            running.start_soon(_forward_interrupt, processes)
            await _when_all_final(final, workers)
            running.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return merged(), trio.current_time() - began


async def _forward_interrupt(processes: list[trio.Process]) -> None:
    """Ctrl-C or SIGTERM here ends the workers' runs: each drains and sends its final report."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)


async def _when_all_final(final: dict[int, Stats], workers: int) -> None:
    while len(final) < workers:  # noqa: ASYNC110 - filled in by the reader tasks
        await trio.sleep(0.1)
