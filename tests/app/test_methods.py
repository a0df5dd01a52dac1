"""The protocol's names for thin clients (:mod:`sidecar.app.methods`): the same values as the
wire types' module, which re-exports them, and the core's run states."""

from __future__ import annotations

import subprocess
import sys

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
