"""The ``sidecar`` command line, run as a real subprocess. ``run``, ``trigger`` and ``save``
are tested both through the workspace's host (the default) and in-process (``--no-host``);
tests/frontends/cli/test_cli_host.py has what only the host does."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "project"
pytestmark = pytest.mark.timeout(60)

PY = sys.executable

MODES = pytest.mark.parametrize("mode", [[], ["--no-host"]], ids=["host", "no-host"])
"""Through the workspace's host, and in this process."""


def sidecar(*args: str, cwd: Path, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "sidecar", *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, timeout=50)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


CHAIN = f"""
[[command]]
name = "Lint"
triggers = ["changes_applied"]
command = "{PY} -c 'print(\\"linted\\")'"

[[command]]
name = "Tests"
triggers = ["command_success:Lint"]
command = "{PY} -c 'import sys; print(\\"testing\\"); sys.exit(3)'"
"""


@MODES
def test_run_streams_chain_and_exit_code_is_the_result(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", CHAIN)
    proc = sidecar("run", *mode, "Lint", cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert "[Lint] linted" in lines
    assert "[Tests] testing" in lines
    assert any(line.startswith("✓ Lint success") for line in lines)
    assert any(line.startswith("✗ Tests failed") and "(exit 3)" in line for line in lines)
    assert proc.returncode == 3


def test_trigger_json_lines_in_process(tmp_path: Path) -> None:
    """``--json`` prints the notifications an editor gets, in their wire form
    (protocol.md): in-process, lifecycle events from ``orchestrator_started`` to
    ``orchestrator_shutdown``, and runs with every RunInfo field."""
    write(tmp_path / "sidecar.toml", CHAIN.replace("sys.exit(3)", "sys.exit(0)"))
    proc = sidecar("trigger", "--no-host", "changes_applied", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {tuple(sorted(m)) for m in lines} == {("method", "params")}
    events = [m["params"]["name"] for m in lines if m["method"] == "sidecar/event"]
    assert events[0] == "orchestrator_started" and events[-1] == "orchestrator_shutdown"
    finals = [p for m in lines if m["method"] == "sidecar/runUpdate"
              for p in [m["params"]] if p["state"] == "success"]
    assert [p["command"] for p in finals] == ["Lint", "Tests"]
    assert finals[1]["triggerChain"] == ["changes_applied", "command_started:Lint",
                                         "command_success:Lint"]
    assert finals[1]["triggerEvent"] == "command_success:Lint"
    assert [p["startedBy"] for p in finals] == ["cli", "cli"]
    assert finals[1]["upstreamRunIds"] == [finals[0]["runId"]]
    assert finals[0]["previous"] == "running" and finals[0]["exitCode"] == 0
    assert finals[0]["durationSecs"] > 0 and "durationMs" not in finals[0]
    assert finals[0]["outputSize"] == len(b"linted\n")
    assert "linted" in finals[0]["resolvedCommand"]
    chunks = [m["params"]["text"] for m in lines if m["method"] == "sidecar/outputChunk"
              and m["params"]["command"] == "Lint"]
    assert "".join(chunks) == "linted\n"


@MODES
def test_trigger_nobody_listens(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", CHAIN)
    proc = sidecar("trigger", *mode, "nothing_here", cwd=tmp_path)
    assert proc.returncode == 0
    assert "no command listens to 'nothing_here'" in proc.stderr


@MODES
def test_run_var_is_not_shell_injected(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", '[variables]\nwho = ""\n[[command]]\nname = "Greet"\n'
                                     'command = "echo hello {{ who }}"\n')
    marker = tmp_path / "pwned"
    proc = sidecar("run", *mode, "Greet", "--var", f"who=$(touch {marker}); touch {marker}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"[Greet] hello $(touch {marker}); touch {marker}" in proc.stdout
    assert not marker.exists()


@MODES
def test_run_errors(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", CHAIN)
    proc = sidecar("run", *mode, "Nope", cwd=tmp_path)
    assert proc.returncode == 1
    assert "unknown command 'Nope'" in proc.stderr and "Lint" in proc.stderr
    proc = sidecar("run", *mode, "Lint", "--var", "novalue", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--var expects NAME=VALUE" in proc.stderr


@MODES
def test_missing_config_is_a_clear_error(tmp_path: Path, mode: list[str]) -> None:
    for command in (["run", "Lint"], ["trigger", "x"], ["save", "x.py"]):
        proc = sidecar(command[0], *mode, *command[1:], cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert "no config found" in proc.stderr


def test_check_reports_positions_and_exit_code(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", '[[command]]\nname = "A"\ncommand = "echo {{ nope }}"\n'
                                       'max_concurent = 1\n')
    proc = sidecar("check", str(bad), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{bad}:3:17: warning: Undefined variable 'nope'" in proc.stdout
    assert f"{bad}:4:1: error: unknown key 'max_concurent'" in proc.stdout
    good = write(tmp_path / "good.toml", CHAIN)
    proc = sidecar("check", str(good), cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert "0 error(s)" in proc.stderr


def test_check_suggests_a_close_command_name(tmp_path: Path) -> None:
    cfg = write(tmp_path / "sidecar.toml", CHAIN.replace("command_success:Lint",
                                                         "command_success:Lnt"))
    proc = sidecar("check", cwd=tmp_path)
    assert proc.returncode == 1
    assert (f"{cfg}:9:13: error: 'command_success:Lnt' names unknown command 'Lnt'; "
            "did you mean 'Lint'? [unknown-command]") in proc.stdout.splitlines()


def test_check_syntax_error_json(tmp_path: Path) -> None:
    bad = write(tmp_path / "sidecar.toml", '[[command]]\nname = "A"\ncommand = \n')
    proc = sidecar("check", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    (problem,) = json.loads(proc.stdout)
    assert problem["code"] == "toml-syntax"
    assert (problem["file"], problem["line"]) == (str(bad), 3)


def test_check_reports_a_value_nested_too_deeply(tmp_path: Path) -> None:
    deep = "deep = " + "{ a = " * 500 + "1" + " }" * 500 + "\n"
    bad = write(tmp_path / "sidecar.toml", '[[command]]\nname = "A"\ncommand = "true"\n' + deep)
    proc = sidecar("check", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (problem,) = json.loads(proc.stdout)
    assert problem["code"] == "too-deep" and "nested too deeply" in problem["message"]
    assert (problem["file"], problem["line"]) == (str(bad), 4)


@MODES
def test_invalid_config_refuses_to_run(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", '[[command]]\nname = "A"\ncommand = "true"\n'
                                     'timeout_secs = "soon"\n')
    proc = sidecar("run", *mode, "A", cwd=tmp_path)
    assert proc.returncode == 3
    assert "sidecar.toml:4:16: error:" in proc.stderr


def test_preview_shows_exec_or_shell(tmp_path: Path) -> None:
    write(tmp_path / "sidecar.toml", '[variables]\nd = "src"\n'
                                     '[[command]]\nname = "A"\ncommand = "ls {{ d }}"\n'
                                     '[[command]]\nname = "B"\ncommand = "ls | wc -l"\n')
    a = json.loads(sidecar("preview", "A", "--json", "--var", "d=a b", cwd=tmp_path).stdout)
    # The wire form of sidecar/preview (protocol.md): argv null means /bin/sh -c.
    assert a["command"] == "A" and a["argv"] == ["ls", "a b"]
    assert a["resolved"] == "ls 'a b'"
    assert a["cwd"] == str(tmp_path) and a["vars"]["d"] == "a b" and a["env"] == {}
    b = json.loads(sidecar("preview", "B", "--json", cwd=tmp_path).stdout)
    assert b["argv"] is None and b["resolved"] == "ls | wc -l"


def test_graph_text_and_mermaid(tmp_path: Path) -> None:
    write(tmp_path / "sidecar.toml", CHAIN)
    text = sidecar("graph", cwd=tmp_path).stdout.splitlines()
    assert "changes_applied → Lint" in text
    assert "Lint --command_success--> Tests" in text
    mermaid = sidecar("graph", "--mermaid", cwd=tmp_path).stdout
    assert mermaid.startswith("flowchart LR")
    assert 'c0 -- "success" --> c1' in mermaid


def test_graph_mermaid_is_deterministic_with_one_node_per_event(tmp_path: Path) -> None:
    """Same output in every process (so it can be committed and diffed), and an event that
    both triggers one command and cancels another (changes_applied here) is one node."""
    shutil.copy(EXAMPLE / "cmdorc.toml", tmp_path / "cmdorc.toml")
    outputs = []
    for seed in ("1", "2", "3"):
        proc = subprocess.run([PY, "-m", "sidecar", "graph", "--mermaid"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    mermaid = outputs[0]
    events: dict[str, set[str]] = {}
    for node, label in re.findall(r'(\w+)\(\["([^"]*)"\]\)', mermaid):  # stadium: an event
        events.setdefault(label, set()).add(node)
    assert sorted(events) == ["Lint", "Tests", "changes_applied", "exit", "prompt_send"]
    assert all(len(nodes) == 1 for nodes in events.values()), events
    assert len({n for nodes in events.values() for n in nodes}) == len(events)
    (applied,) = events["changes_applied"]
    commands = dict(re.findall(r'^  (\w+)\["([^"]*)"\]$', mermaid, re.M))
    by_name = {name: node for node, name in commands.items()}
    assert f"  {applied} --> {by_name['Lint']}" in mermaid.splitlines()
    assert f"  {applied} -. cancels .-> {by_name['Tests']}" in mermaid.splitlines()


def test_init_writes_a_valid_sample(tmp_path: Path) -> None:
    proc = sidecar("init", cwd=tmp_path)
    assert proc.returncode == 0
    assert (tmp_path / "sidecar.toml").is_file()
    assert sidecar("check", cwd=tmp_path).returncode == 0
    again = sidecar("init", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr


def test_init_sample_tells_hooks_to_call_sidecar_save(tmp_path: Path) -> None:
    """The sample's [on_save] comment names the command a hook calls (as README does), and
    that command fires the table's triggers with the saved path."""
    assert sidecar("init", cwd=tmp_path).returncode == 0
    lines = (tmp_path / "sidecar.toml").read_text(encoding="utf-8").splitlines()
    at = lines.index("[on_save]")
    start = at
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    comment = " ".join(lines[start:at])
    assert "`sidecar save" in comment and "sidecar trigger" not in comment, comment
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    proc = sidecar("save", "--wait", "src/app.py", cwd=tmp_path)
    assert any(line.startswith("▶ Lint running  (changes_applied)")
               for line in proc.stdout.splitlines()), proc.stdout + proc.stderr
    assert any(line.startswith("✓ Lint success") for line in proc.stdout.splitlines())


@MODES
def test_bundled_example_main_job(tmp_path: Path, mode: list[str]) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".cmdorc"))
    proc = sidecar("trigger", *mode, "changes_applied", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("Lint", "Tests", "Report"):
        assert any(line.startswith(f"✓ {name} success") for line in proc.stdout.splitlines())
    stored = sorted(p.parent.parent.name for p in
                    (project / ".cmdorc" / "outputs").glob("*/*/metadata.toml"))
    assert stored == ["Lint", "Report", "Tests"]


@MODES
def test_save_fires_on_save_triggers_with_the_path(tmp_path: Path, mode: list[str]) -> None:
    write(tmp_path / "sidecar.toml", '[on_save]\n"src/**/*.py" = "changes_applied"\n'
                                     '[variables]\nsaved_file_relative = ""\n'
                                     '[[command]]\nname = "Lint"\ntriggers = ["changes_applied"]\n'
                                     'command = "echo linting {{ saved_file_relative }}"\n')
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    saved = tmp_path / "src" / "pkg" / "it's.py"
    saved.write_text("x = 1\n")
    proc = sidecar("save", *mode, "--wait", str(saved), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[Lint] linting src/pkg/it's.py" in proc.stdout.splitlines()
    other = sidecar("save", *mode, str(tmp_path / "README.md"), cwd=tmp_path)
    assert "no [on_save] glob matches" in other.stderr
    os.utime(saved, ns=(saved.stat().st_mtime_ns + 10**9,) * 2)  # another save of it
    lines = [json.loads(line) for line in sidecar("save", *mode, "--wait", str(saved), "--json",
                                                  cwd=tmp_path).stdout.splitlines()]
    finals = [m["params"] for m in lines if m["method"] == "sidecar/runUpdate"
              and m["params"]["state"] == "success"]
    assert [(p["command"], p["startedBy"]) for p in finals] == [("Lint", "hook")]


def test_check_trigger_cycle_and_unterminated_template(tmp_path: Path) -> None:
    cfg = write(tmp_path / "sidecar.toml", (
        '[variables]\nx = "{{ y"\n'
        '[[command]]\nname = "A"\ncommand = "true"\ntriggers = ["command_success:B"]\n'
        '[[command]]\nname = "B"\ncommand = "true"\ntriggers = ["command_success:A"]\n'
        'loop_detection = false\n'))
    proc = sidecar("check", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert f"{cfg}:2:6: error: unterminated '{{{{' (missing '}}}}') [unterminated-template]" \
        in lines
    cycle = [line for line in lines if line.endswith("[trigger-cycle]")]
    assert [line.split(": error: ")[0] for line in cycle] == [f"{cfg}:6:13", f"{cfg}:10:13"]
    assert all("A -> command_success:A -> B -> command_success:B -> A" in line
               for line in cycle)


def test_plain_sidecar_serves_when_stdin_is_not_a_tty(tmp_path: Path) -> None:
    write(tmp_path / "sidecar.toml", CHAIN)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"processId": None, "rootUri": tmp_path.as_uri(),
                                  "capabilities": {}}})
    proc = subprocess.run([PY, "-m", "sidecar"], cwd=tmp_path, capture_output=True,
                          input=f"Content-Length: {len(body)}\r\n\r\n{body}".encode(),
                          timeout=30)
    header, _, payload = proc.stdout.partition(b"\r\n\r\n")
    assert header.startswith(b"Content-Length: ")
    length = int(header.split(b"\r\n")[0].split(b":")[1])
    response = json.loads(payload[:length])
    assert response["id"] == 1 and response["result"]["serverInfo"]["name"] == "cmdsidecar"
    assert proc.returncode == 1  # the client went away without shutdown (protocol.md §1)


@pytest.mark.parametrize("stdin_kind", ["devnull", "empty-file"])
@pytest.mark.parametrize("args", [["serve"], []], ids=["serve", "plain"])
def test_serve_with_nothing_on_stdin_exits_at_once(tmp_path: Path, args: list[str],
                                                   stdin_kind: str) -> None:
    """``sidecar serve </dev/null`` (or an empty file): end of input before any message is a
    session that never started, so the server exits at once with 0 (protocol.md §1)."""
    write(tmp_path / "sidecar.toml", CHAIN)
    empty = tmp_path / "empty.in"
    empty.write_bytes(b"")
    with open(os.devnull if stdin_kind == "devnull" else empty, "rb") as stdin:
        proc = subprocess.run([PY, "-m", "sidecar", *args], cwd=tmp_path, stdin=stdin,
                              capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr and b"Error" not in proc.stderr, proc.stderr.decode()
    assert proc.stdout == b""


def test_version(tmp_path: Path) -> None:
    proc = sidecar("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"sidecar {importlib.metadata.version('cmdsidecar')}\n"


def test_version_is_looked_up_only_when_asked() -> None:
    """Hooks call the CLI on every save: looking up the installed version (importing
    importlib.metadata, scanning distributions) is paid by --version alone."""
    code = ("import contextlib, io, sys\nfrom sidecar.frontends.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['check', '--help'])\n"
            "print('importlib.metadata' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr
