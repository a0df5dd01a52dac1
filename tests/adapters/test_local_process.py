"""Child processes: exec vs shell, stdin/stderr, process-group cleanup in every ending."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from corehelp import (
    alive,
    assert_tree_gone,
    find_tree,
    marker,
    orch_of,
    py,
    tree_cmd,
    wait_until,
)

from sidecar import CommandConfig, RunState
from sidecar.adapters.local_process import reaper

pytestmark = pytest.mark.timeout(30)


def _find_by_marker(mark: str) -> psutil.Process:
    def probe() -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline"]):
            if any(mark in part for part in p.info["cmdline"] or []):
                return p
        return None

    return wait_until(probe, what=mark)


async def test_plain_command_is_execed_directly() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(name="Sleep", command=py("import time; time.sleep(30)") +
                                 f" {mark}"))
    handle = await orch.run_command("Sleep")
    try:
        rc = handle.resolved_command
        assert rc is not None
        assert rc.argv == [sys.executable, "-c", "import time; time.sleep(30)", mark]
        proc = _find_by_marker(mark)
        # The command itself is our direct child: no /bin/sh in between.
        assert proc.ppid() == os.getpid()
        assert proc.exe() == os.path.realpath(sys.executable) or proc.name().startswith("python")
        assert proc.cmdline()[0] == sys.executable
        # ... and leads its own process group / session.
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) == proc.pid
    finally:
        await orch.shutdown()
    assert handle.state is RunState.CANCELLED


async def test_shell_syntax_goes_through_sh() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(name="Sh", command=f"sleep 30 && echo {mark}"))
    handle = await orch.run_command("Sh")
    try:
        assert handle.resolved_command is not None
        assert handle.resolved_command.argv is None
        proc = _find_by_marker(mark)
        assert proc.cmdline()[:2] == ["/bin/sh", "-c"]
        assert proc.ppid() == os.getpid()
    finally:
        await orch.shutdown()


@pytest.mark.parametrize("command,argv", [
    ("echo hello world", ["echo", "hello", "world"]),
    ("echo 'a;b' \"c|d\"", ["echo", "a;b", "c|d"]),
    ("echo a; echo b", None),
    ("echo a | cat", None),
    ("echo $HOME", None),
    ('echo "$HOME"', None),
    ('echo "\\$HOME"', None),  # shlex would keep the backslash; sh drops it
    ('echo "a\\"b"', ["echo", 'a"b']),
    ("echo *.py", None),
    ("FOO=1 env", None),
    ("echo a > /dev/null", None),
])
async def test_argv_only_without_shell_syntax(command: str, argv: list[str] | None) -> None:
    orch = orch_of(CommandConfig(name="C", command=command))
    assert orch.preview_command("C").argv == argv


async def test_shell_command_output_and_exit_code() -> None:
    orch = orch_of(CommandConfig(name="C", command="echo one; echo two >&2; exit 3"))
    handle = await orch.run_command("C")
    result = await handle.wait(10)
    assert result.state is RunState.FAILED
    assert result.exit_code == 3
    assert result.output == "one\ntwo\n"


async def test_stdin_is_dev_null() -> None:
    code = ("import os, sys; print(os.path.realpath('/proc/self/fd/0')); "
            "print(repr(sys.stdin.read()))")
    orch = orch_of(CommandConfig(name="In", command=py(code)))
    result = await (await orch.run_command("In")).wait(10)
    assert result.state is RunState.SUCCESS
    assert result.output == "/dev/null\n''\n"


async def test_stderr_is_merged_in_order() -> None:
    code = ("import sys\n"
            "print('out1', flush=True)\n"
            "print('err1', file=sys.stderr, flush=True)\n"
            "print('out2', flush=True)\n"
            "print('err2', file=sys.stderr, flush=True)\n")
    orch = orch_of(CommandConfig(name="Mix", command=py(code)))
    result = await (await orch.run_command("Mix")).wait(10)
    assert result.output == "out1\nerr1\nout2\nerr2\n"


async def test_missing_program_fails_cleanly() -> None:
    orch = orch_of(CommandConfig(name="Nope", command="definitely-not-a-program-xyz --flag"))
    handle = await orch.run_command("Nope")
    result = await handle.wait(10)
    assert result.state is RunState.FAILED
    assert result.exit_code == 127
    assert "command not found" in result.output
    assert "definitely-not-a-program-xyz" in str(result.error)


async def test_missing_cwd_fails_cleanly(tmp_path) -> None:
    orch = orch_of(CommandConfig(name="C", command="echo hi", cwd=str(tmp_path / "nope")))
    result = await (await orch.run_command("C")).wait(10)
    assert result.state is RunState.FAILED
    assert "working directory not found" in str(result.error)


async def test_cwd_and_env_are_applied(tmp_path) -> None:
    code = "import os; print(os.getcwd()); print(os.environ['SIDECAR_T'])"
    orch = orch_of(CommandConfig(name="C", command=py(code), cwd=str(tmp_path),
                                 env={"SIDECAR_T": "v-{{ x }}"}), vars={"x": "1"})
    result = await (await orch.run_command("C")).wait(10)
    assert result.output == f"{os.path.realpath(tmp_path)}\nv-1\n"


# ------------------------------------------------------------------------------------------
# No process survives
# ------------------------------------------------------------------------------------------


async def test_cancel_kills_whole_tree() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(name="Tree", command=tree_cmd(mark)))
    handle = await orch.run_command("Tree")
    leader, sleeps = await asyncio.to_thread(find_tree, mark)
    assert await orch.cancel_command("Tree", comment="stop it") == 1
    result = await handle.wait(10)
    assert result.state is RunState.CANCELLED
    assert result.comment == "stop it"
    await asyncio.to_thread(assert_tree_gone, leader, sleeps)
    await orch.shutdown()


async def test_timeout_kills_whole_tree() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(name="Tree", command=tree_cmd(mark), timeout_secs=1))
    handle = await orch.run_command("Tree")
    leader, sleeps = await asyncio.to_thread(find_tree, mark)
    result = await handle.wait(10)
    assert result.state is RunState.FAILED
    assert result.success is False
    assert "timed out" in str(result.error).lower()
    assert result.duration is not None and result.duration.total_seconds() >= 0.9
    await asyncio.to_thread(assert_tree_gone, leader, sleeps)
    await orch.shutdown()


async def test_shutdown_kills_whole_tree() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(name="Tree", command=tree_cmd(mark)))
    handle = await orch.run_command("Tree")
    leader, sleeps = await asyncio.to_thread(find_tree, mark)
    summary = await orch.shutdown(timeout=10)
    assert summary["cancelled_count"] == 1
    assert summary["timeout_expired"] is False
    assert handle.state is RunState.CANCELLED
    await asyncio.to_thread(assert_tree_gone, leader, sleeps)


async def test_sigterm_ignoring_tree_is_sigkilled_after_grace() -> None:
    mark = marker()
    script = "trap '' TERM; sleep 100 & sleep 100; wait"
    orch = orch_of(CommandConfig(name="Stubborn", command=f"sh -c \"{script}\" {mark}"),
                   grace_secs=0.5)
    handle = await orch.run_command("Stubborn")
    proc = await asyncio.to_thread(_find_by_marker, mark)
    kids = await asyncio.to_thread(
        wait_until, lambda: [c.pid for c in proc.children() if c.name() == "sleep"], 10)
    await orch.cancel_command("Stubborn")
    assert (await handle.wait(10)).state is RunState.CANCELLED
    await asyncio.to_thread(wait_until, lambda: not any(alive(p) for p in [proc.pid, *kids]),
                            10)


async def test_background_child_of_finished_leader_is_cleaned_up() -> None:
    """The leader exits while a background child still holds the output pipe: the run ends
    (it does not wait 100 s) and the child is killed."""
    mark = marker()
    orch = orch_of(CommandConfig(name="Bg", command=f"sh -c 'sleep 100 & echo $!' {mark}"))
    handle = await orch.run_command("Bg")
    result = await handle.wait(15)
    assert result.state is RunState.SUCCESS
    assert result.duration is not None and result.duration.total_seconds() < 10
    pid = int(result.output.strip())
    await asyncio.to_thread(wait_until, lambda: not alive(pid), 10, what=f"sleep {pid} exit")


async def test_detached_background_child_is_killed_when_leader_exits() -> None:
    mark = marker()
    orch = orch_of(CommandConfig(
        name="Bg", command=f"sh -c 'sleep 100 >/dev/null 2>&1 & echo $!' {mark}"))
    result = await (await orch.run_command("Bg")).wait(15)
    assert result.state is RunState.SUCCESS
    pid = int(result.output.strip())
    await asyncio.to_thread(wait_until, lambda: not alive(pid), 10, what=f"sleep {pid} exit")


HOST = textwrap.dedent("""
    import asyncio, sys
    from sidecar import CommandConfig, CommandOrchestrator

    async def main():
        orch = CommandOrchestrator([CommandConfig(name="Tree", command=sys.argv[1])])
        await orch.run_command("Tree")
        print("started", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def test_host_killed_with_sigkill_leaves_no_process() -> None:
    mark = marker()
    host = subprocess.Popen([sys.executable, "-c", HOST, tree_cmd(mark)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert host.stdout is not None
        assert host.stdout.readline() == b"started\n"
        leader, sleeps = find_tree(mark)
        reapers = [c for c in psutil.Process(host.pid).children()
                   if "fcntl" in " ".join(c.cmdline())]
        assert len(reapers) == 1, "the host should have started one reaper"
        assert psutil.Process(leader).ppid() == host.pid
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait(10)
    assert_tree_gone(leader, sleeps, timeout=10)
    wait_until(lambda: not alive(reapers[0].pid), 10, what="reaper exit")


def test_reaper_is_shared_per_host_process() -> None:
    async def main() -> int | None:
        orch = orch_of(CommandConfig(name="A", command="true"),
                       CommandConfig(name="B", command="true"))
        await (await orch.run_command("A")).wait(10)
        first = reaper.pid
        await (await orch.run_command("B")).wait(10)
        assert reaper.pid == first
        return first

    pid = asyncio.run(main())
    assert pid is not None and alive(pid)
