"""Cost of the service layer, against the core measured in the same run
(``python bench/service.py``).

Both sides run the same commands on the same orchestrator, alternating in rounds so that load
on the machine hits both alike:

1. ``run`` + ``wait`` of ``true``: ``await orch.run_command("T")`` then ``handle.wait()``
   (the core) vs ``await service.run(RunParams(command="T", wait=True))`` (the service layer,
   as a frontend calls it: typed params in, the wire result out). Time per run.
2. A 20-command ``command_success`` chain started by ``trigger``: ``orch.trigger`` vs
   ``service.trigger``, each waiting for the last command's final event. Time per chain.
3. ``status`` of 50 commands: the core's ``get_status`` + ``get_active_handles`` per command
   vs ``service.status`` turned into JSON-ready dicts (``to_wire``). Time per call; no process
   is involved, so this is the pure cost of building the wire form.

One session is attached throughout (it turns every event into its wire notification, as for
an editor), so both sides publish the same notifications; what differs is the service call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _common import fmt_ratio, markdown_table, median

from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host
from sidecar.host.session import Session

CHAIN = 20
STATUS_COMMANDS = 50


class NullOutbox:
    """Counts messages (the frontend's transport is not what is measured)."""

    pending_bytes = 0

    def __init__(self) -> None:
        self.count = 0

    def send(self, message: dict[str, Any]) -> None:
        self.count += 1


def config_text() -> str:
    parts = ['[[command]]\nname = "T"\ncommand = "true"\nmax_concurrent = 0\n']
    parts.append('[[command]]\nname = "C0"\ncommand = "true"\ntriggers = ["go"]\n')
    for i in range(1, CHAIN):
        parts.append(f'[[command]]\nname = "C{i}"\ncommand = "true"\n'
                     f'triggers = ["command_success:C{i - 1}"]\n')
    for i in range(STATUS_COMMANDS - CHAIN - 1):
        parts.append(f'[[command]]\nname = "S{i}"\ncommand = "true"\n')
    return "".join(parts)


async def measure(rounds: int, runs: int, chains: int, statuses: int) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    (root / "sidecar.toml").write_text(config_text())
    host = Host(root)
    assert host.reload().ok
    started = host.start()
    if started is not None:
        await started
    orch = host.orchestrator
    assert orch is not None
    service = Service(host)
    outbox = NullOutbox()
    session = Session(host, outbox)
    last = f"command_success:C{CHAIN - 1}"
    done: asyncio.Event = asyncio.Event()
    orch.on_event(last, lambda handle, ctx: done.set())
    samples: dict[str, list[float]] = {k: [] for k in
                                       ("run core", "run service", "chain core",
                                        "chain service", "status core", "status service")}

    async def core_runs() -> float:
        t0 = time.perf_counter()
        for _ in range(runs):
            handle = await orch.run_command("T")
            await handle.wait(30)
        return (time.perf_counter() - t0) / runs

    async def service_runs() -> float:
        t0 = time.perf_counter()
        for _ in range(runs):
            await service.run(P.RunParams(command="T", wait=True, timeout_ms=30000))
        return (time.perf_counter() - t0) / runs

    async def chain(fire: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(chains):
            done.clear()
            await fire()
            await asyncio.wait_for(done.wait(), 60)
            await orch.wait_idle(30)
        return (time.perf_counter() - t0) / chains

    def core_status() -> float:
        t0 = time.perf_counter()
        for _ in range(statuses):
            for name in orch.list_commands():
                st = orch.get_status(name)
                [h.run_id for h in orch.get_active_handles(name)]
                if st.last_run is not None:
                    st.last_run.snapshot()
        return (time.perf_counter() - t0) / statuses

    async def service_status() -> float:
        t0 = time.perf_counter()
        for _ in range(statuses):
            P.to_wire(await service.status(P.StatusParams()))
        return (time.perf_counter() - t0) / statuses

    # Warm-up: both paths once (imports, caches, first spawns).
    await core_runs()
    await service_runs()
    for _ in range(rounds):
        samples["run core"].append(await core_runs())
        samples["run service"].append(await service_runs())
        samples["chain core"].append(await chain(lambda: orch.trigger("go")))
        samples["chain service"].append(
            await chain(lambda: service.trigger(P.TriggerParams(event="go"))))
        samples["status core"].append(core_status())
        samples["status service"].append(await service_status())
    await host.close()
    session.close()
    assert outbox.count > 0
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    args = ap.parse_args()
    rounds = 3 if args.quick else 7
    samples = asyncio.run(measure(rounds, runs=100, chains=5, statuses=200))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {rounds} rounds; medians")
    rows = []
    for figure, label, unit in (("run", "run + wait of `true` (per run)", 1e3),
                                ("chain", f"{CHAIN}-command chain from a trigger (per chain)",
                                 1e3),
                                ("status", f"status of {STATUS_COMMANDS} commands (per call)",
                                 1e6)):
        core = median(samples[f"{figure} core"])
        svc = median(samples[f"{figure} service"])
        assert core is not None and svc is not None
        suffix = "ms" if unit == 1e3 else "µs"
        rows.append([label, f"{core * unit:.2f} {suffix}", f"{svc * unit:.2f} {suffix}",
                     fmt_ratio(svc / core)])
    print(markdown_table(["figure", "core", "service layer", "ratio"], rows))


if __name__ == "__main__":
    main()
