"""README's quick start: its two commands, pasted into one shell, each work from the repository
root whatever ran before."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


def quick_start_commands() -> list[str]:
    """The command lines of the ```sh block of README's "Quick start" (comments skipped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found is not None, "no ```sh block in the Quick start section"
    return [line.strip() for line in found.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_has_two_commands_that_stay_in_the_root() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    for command in commands:
        # A `cd` would leave the shell elsewhere for the next command.
        assert "&& cd " not in command and not command.startswith("cd "), command


# Stand-ins for the slow, networked parts (creating a venv, pip installing): each logs its
# working directory. The sidecar they "install" is this checkout's, run by this interpreter,
# which also runs every other `python3` (the example's commands).
PYTHON3_STUB = """\
#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    echo "$(pwd -P) python3 $*" >> "$STUB_LOG"
    mkdir -p "$3/bin"
    for tool in pip python; do
        printf '#!/bin/sh\\necho "$(pwd -P) %s $*" >> "$STUB_LOG"\\n' "$tool" > "$3/bin/$tool"
    done
    printf '#!/bin/sh\\nexec %s -m sidecar "$@"\\n' "$REAL_PYTHON" > "$3/bin/sidecar"
    chmod +x "$3/bin/pip" "$3/bin/python" "$3/bin/sidecar"
    exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def test_quick_start_commands_run_in_one_shell(tmp_path: Path) -> None:
    """Both commands pasted into one shell, in a copy of the repository: each runs from the
    root (the venv is made there, not in examples/project), and the first runs the example's
    chain for real."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", repo / "examples",
                    ignore=shutil.ignore_patterns(".cmdorc", "__pycache__"))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "python3").write_text(PYTHON3_STUB)
    (stubs / "python3").chmod(0o755)
    log = tmp_path / "stub.log"
    first, second = quick_start_commands()
    script = "\n".join([first, 'echo "after 1: $? $(pwd -P)"',
                        second, 'echo "after 2: $? $(pwd -P)"'])
    # The host `sidecar trigger` starts goes where tests/conftest.py stops it.
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log),
           "REAL_PYTHON": sys.executable, "HOME": str(tmp_path), "NO_COLOR": "1",
           "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]}
    proc = subprocess.run(["sh", "-c", script], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=50)
    out = proc.stdout.splitlines()
    root = str(repo.resolve())
    assert f"after 1: 0 {root}" in out, proc.stdout + proc.stderr
    assert f"after 2: 0 {root}" in out, proc.stdout + proc.stderr
    for name in ("Lint", "Tests", "Report"):
        assert any(line.startswith(f"✓ {name} success") for line in out), proc.stdout
    calls = log.read_text().splitlines()
    assert [c.split(" ", 2)[1] for c in calls] == ["python3", "pip", "python3", "pip", "pip",
                                                        "python"]
    assert all(c.startswith(root + " ") for c in calls), calls
    assert not (repo / "examples" / "project" / ".venv").exists()
    assert shlex.split(second)[-3:] == [".venv/bin/python", "-m", "pytest"]
