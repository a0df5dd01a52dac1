"""The protocol's names for thin clients (:mod:`sidecar.app.methods`): the same values as the
wire types' module, which re-exports them, and the core's run states."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sidecar.app import methods
from sidecar.app import protocol as P
from sidecar.core.runs import RunState


def test_protocol_reexports_every_name_of_methods() -> None:
    assert methods.__all__
    for name in methods.__all__:
        assert getattr(P, name) is getattr(methods, name), name


def test_run_states_are_the_cores() -> None:
    assert methods.RUN_STATES == tuple(s.value for s in RunState)
    assert methods.FINAL_STATES == tuple(s.value for s in RunState if s.is_final)


def test_the_thin_modules_import_no_core() -> None:
    """What the host-backed command line prints with: no asyncio, attrs or core runs."""
    code = ("import sys\n"
            "import sidecar.app.methods, sidecar.app.present, sidecar.frontends.cli.report\n"
            "from sidecar import format_duration as f\n"
            "print(sorted(m for m in ('asyncio', 'attrs', 'cattrs', 'sidecar.core.runs')"
            " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_every_request_and_notification_is_in_protocol_md_and_served() -> None:
    from sidecar.app.service import Service
    from sidecar.host.host import Host

    text = (Path(__file__).resolve().parents[2] / "protocol.md").read_text()
    headings = set(re.findall(r"^### `([a-zA-Z/$]+)`", text, re.M))
    assert set(methods.REQUESTS) | set(methods.NOTIFICATIONS) <= headings
    served = set(Service(Host(Path.cwd())).operations())
    session_bound = {methods.M_SET_OUTPUT_FILTER, methods.M_HOST_INFO}
    assert served | session_bound == set(methods.REQUESTS)
