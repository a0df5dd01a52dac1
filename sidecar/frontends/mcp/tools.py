"""The MCP tools: each one request (or two) of protocol.md through the agent session.

A tool only translates: its validated arguments into ``sidecar/*`` params, the host's result
into a structured result (the models below, published as output schemas) plus a text for
people, and the host's errors into tool errors (``isError`` results naming the problem).
What an agent may do is decided by the host (:mod:`sidecar.app.agents`), not here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from sidecar.app import methods as M
from sidecar.app.agents import MAX_VALUE_CHARS, MAX_VARS
from sidecar.app.present import run_label, why_label

from .link import HostLink, LinkError

MAX_WAIT_SECS = 600
READ_MAX = 64 * 1024
"""The most output bytes one ``read_output`` call returns."""
TAIL_BYTES = 8 * 1024
"""How much of the end of a run's output ``run_command``/``get_run`` look at for its last
lines."""
PROGRESS_EVERY = 0.2
"""Seconds between two progress notifications at most (a line that changed)."""
HEARTBEAT = 1.0
"""Seconds after which progress is reported even if the last line did not change."""
CANCEL_REASON = "cancelled by the agent"

# ------------------------------------------------------------------------------- arguments
CommandName = Annotated[str, Field(min_length=1, max_length=200,
                                   description="A command name from list_commands.")]
RunId = Annotated[str, Field(min_length=1, max_length=100,
                             description="A run id (run_id of a run_command, trigger or "
                                         "history result).")]
Vars = Annotated[
    dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$", max_length=100)],
         Annotated[str, Field(max_length=MAX_VALUE_CHARS)]],
    Field(max_length=MAX_VARS,
          description=f"Runtime variables: only those list_commands shows for the command, "
                      f"at most {MAX_VARS}, each value a string of at most {MAX_VALUE_CHARS} "
                      "characters. Values are passed as data (quoted), never as shell code.")]
WaitSecs = Annotated[float, Field(ge=0, le=MAX_WAIT_SECS,
                                  description=f"Seconds to wait for the run to finish (0 to "
                                              f"{MAX_WAIT_SECS}). A run still going then is "
                                              "returned as it is (state running); it goes on.")]
TailLines = Annotated[int, Field(ge=0, le=200, description="How many of the last lines of "
                                                           "output to include (0: none).")]


# ------------------------------------------------------------------------------- results
class Run(BaseModel):
    """A run of a command."""

    run_id: str = Field(description="Its id: for get_run, read_output, cancel.")
    command: str
    state: str = Field(description="pending, running, success, failed, cancelled or lost.")
    exit_code: int | None = Field(description="Exit status; negative: killed by that "
                                              "signal; 127: could not start.")
    duration_secs: float | None
    trigger_chain: list[str] = Field(description="The events that led to the run, oldest "
                                                 "first ([] for a direct run).")
    started_by: str = Field(description="Who caused it: mcp (an agent), an editor's name, "
                                        "cli, hook, watch or host.")
    start_time: str | None
    end_time: str | None
    error: str | None = Field(description="Why it failed, if it did.")
    resolved_command: str | None = Field(description="The command line that ran.")
    output_size: int = Field(description="Bytes of output so far.")
    run_key: str | None
    attempt: int


def _run(info: dict[str, Any]) -> Run:
    """The one mapping from a ``RunInfo`` (wire form) to an agent's view of a run."""
    return Run(run_id=info["runId"], command=info["command"], state=info["state"],
               exit_code=info["exitCode"], duration_secs=info["durationSecs"],
               trigger_chain=info["triggerChain"], started_by=info["startedBy"],
               start_time=info["startTime"], end_time=info["endTime"], error=info["error"],
               resolved_command=info["resolvedCommand"], output_size=info["outputSize"],
               run_key=info.get("runKey"), attempt=info.get("attempt", 1))


class RunOutcome(BaseModel):
    """A run as it is now, with the end of its output."""

    run: Run
    finished: bool = Field(description="True when the run is over (its state is final).")
    existing: bool = Field(description="True when run_key found a run already there "
                                       "instead of starting one.")
    output_tail: str = Field(description="The last lines of its output.")


class Variable(BaseModel):
    name: str
    default: str | None = Field(description="Its value when not given; null: required.")


class CommandEntry(BaseModel):
    name: str
    description: str
    variables: list[Variable] = Field(description="The runtime variables it accepts.")
    triggers: list[str] = Field(description="Events that start it (for the trigger tool).")
    state: str = Field(description="never_run, running, or its last run's state.")
    active_run_ids: list[str]
    last_run: Run | None


class CommandList(BaseModel):
    commands: list[CommandEntry]


class Skipped(BaseModel):
    command: str
    reason: str = Field(description="debounce, concurrency_limit, variable_error, "
                                    "shutting_down or agent_hidden.")
    message: str


class Triggered(BaseModel):
    event: str
    started: list[Run] = Field(description="Runs it started directly (runs their success "
                                           "starts in turn follow; see history).")
    skipped: list[Skipped]
    cancelled: list[str] = Field(description="Commands it cancelled.")


class Output(BaseModel):
    run_id: str
    text: str = Field(description="The output (stdout and stderr interleaved), decoded as "
                                  "UTF-8.")
    offset: int = Field(description="Byte offset of text (with tail_lines: exact unless "
                                    "the output holds invalid UTF-8, shown as U+FFFD).")
    size: int = Field(description="Bytes text covers.")
    next_offset: int = Field(description="Where the next read starts (offset + size).")
    total_size: int = Field(description="Bytes of output so far.")
    final: bool = Field(description="True once the run is over: total_size will not grow.")


class Cancelled(BaseModel):
    cancelled: int = Field(description="How many runs were active and are now cancelled.")


class History(BaseModel):
    runs: list[Run] = Field(description="Finished runs, most recent first.")


class Preview(BaseModel):
    command: str
    resolved: str = Field(description="The exact command line that would run.")
    cwd: str | None
    argv: list[str] | None = Field(description="The argument vector when it runs without a "
                                               "shell; null: it runs through /bin/sh -c.")
    timeout_secs: int | None
    env: dict[str, str] = Field(description="The command's own environment variables.")


# ------------------------------------------------------------------------------- helpers
def _result(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=model.model_dump(mode="json"))


def _run_line(run: Run) -> str:
    label = run_label(run.state, run.exit_code, run.duration_secs)
    return f"{run.command}: {label} (run {run.run_id}, {why_label(run.trigger_chain)})"


def _last_lines(text: str, n: int, partial_first: bool) -> str:
    """The end of ``text`` holding its last ``n`` lines, as it is (a final newline kept);
    ``partial_first``: ``text`` may start mid-line, and that line is left out."""
    start = len(text[:-1] if text.endswith("\n") else text)
    for _ in range(n):
        start = text.rfind("\n", 0, start)
        if start < 0:
            break
    if start < 0:
        start = text.find("\n") if partial_first else -1
        if partial_first and start < 0:
            return ""
    return text[start + 1:] if n else ""


def _progress_token(ctx: Context) -> Any:
    """The client's progress token for this call (None: it asked for no progress)."""
    return progress_token_from_params(ctx.request_context.params)


class Tools:
    """The tools, bound to one :class:`HostLink`."""

    def __init__(self, link: HostLink) -> None:
        self.link = link

    async def _call(self, method: str, params: Any = None) -> Any:
        try:
            return await self.link.request(method, params)
        except LinkError as exc:
            raise ToolError(str(exc)) from None

    async def _tail(self, run: dict[str, Any], lines: int) -> str:
        size = int(run["outputSize"])
        if not lines or not size:
            return ""
        start = max(0, size - TAIL_BYTES)
        got = await self._call(M.M_READ_OUTPUT, {"runId": run["runId"], "offset": start,
                                                  "length": TAIL_BYTES})
        return _last_lines(got["text"], lines, start > 0)

    async def _outcome(self, run: dict[str, Any], existing: bool, lines: int) -> CallToolResult:
        outcome = RunOutcome(run=_run(run), finished=run["state"] in M.FINAL_STATES,
                             existing=existing, output_tail=await self._tail(run, lines))
        text = _run_line(outcome.run)
        if existing:
            text += "\n(an existing run of this run_key; nothing new was started)"
        if not outcome.finished:
            text += (f"\nStill {run['state']}: call get_run with run_id {run['runId']!r} and "
                     "wait_secs to wait for it, or read_output to see its output.")
        if outcome.output_tail:
            text += f"\n--- last lines of output ---\n{outcome.output_tail}"
        return _result(outcome, text)

    async def _wait(self, run: dict[str, Any], wait_secs: float, ctx: Context
                    ) -> dict[str, Any]:
        """The run once final, or as it is after ``wait_secs``; meanwhile progress
        notifications (elapsed time, last line of output) when the client asked for them."""
        if run["state"] in M.FINAL_STATES or wait_secs <= 0:
            return run
        params = {"runId": run["runId"], "timeoutMs": int(wait_secs * 1000)}
        if _progress_token(ctx) is None:
            waited: dict[str, Any] = await self._call(M.M_WAIT, params)
            return waited["run"]  # type: ignore[no-any-return]
        last = {"line": ""}

        def on_line(line: str) -> None:
            last["line"] = line

        began = time.monotonic()
        sent, sent_at = None, 0.0
        with self.link.follow(run["runId"], on_line):
            # What it printed before its chunks were on (followed from now).
            probe = await self._call(M.M_READ_OUTPUT, {"runId": run["runId"], "length": 0})
            printed = (await self._tail({**run, "outputSize": probe["totalSize"]}, 1)).strip()
            if printed and not last["line"]:
                last["line"] = printed
            waiter = asyncio.ensure_future(self._call(M.M_WAIT, params))
            try:
                while True:
                    done, _ = await asyncio.wait({waiter}, timeout=PROGRESS_EVERY)
                    if done:
                        return waiter.result()["run"]  # type: ignore[no-any-return]
                    now = time.monotonic()
                    line = last["line"][:200]
                    if line != sent or now - sent_at >= HEARTBEAT:
                        sent, sent_at = line, now
                        elapsed = now - began
                        await ctx.report_progress(
                            round(elapsed, 1), None,
                            f"{run['command']} running for {elapsed:.0f}s"
                            + (f": {line}" if line else ""))
            finally:
                waiter.cancel()

    # ------------------------------------------------------------------ the tools
    async def list_commands(self) -> Annotated[CallToolResult, CommandList]:
        """Every command of this workspace that you may use, with what each does (its
        description), the runtime variables it accepts (with defaults; null: required),
        the events that trigger it, its current state and its last run. Call this first:
        run_command and trigger accept only what it lists."""
        commands = await self._call(M.M_COMMANDS)
        status = await self._call(M.M_STATUS)
        last = {c["name"]: c["lastRun"] for c in status["commands"]}
        entries = [CommandEntry(
            name=c["name"], description=c["description"],
            variables=[Variable(name=v["name"], default=v["default"]) for v in c["variables"]],
            triggers=c["triggers"], state=c["state"], active_run_ids=c["activeRunIds"],
            last_run=_run(last[c["name"]]) if last.get(c["name"]) else None)
            for c in commands["commands"]]
        lines = []
        for e in entries:
            head = f"- {e.name}" + (f": {e.description}" if e.description else "")
            head += f" [{e.state}]"
            if e.variables:
                head += "; variables: " + ", ".join(
                    v.name + ("" if v.default is None else f"={v.default!r}")
                    for v in e.variables)
            if e.triggers:
                head += "; triggered by: " + ", ".join(e.triggers)
            lines.append(head)
        text = "\n".join(lines) if lines else "This workspace declares no command for agents."
        return _result(CommandList(commands=entries), text)

    async def run_command(self, command: CommandName, ctx: Context, vars: Vars | None = None,
                          run_key: Annotated[str | None, Field(
                              min_length=1, max_length=200,
                              description="Idempotency key: a call with a key used before "
                                          "returns that key's run (running or finished) "
                                          "instead of starting another; use a new key for "
                                          "a new run.")] = None,
                          wait_secs: WaitSecs = 30, tail_lines: TailLines = 20
                          ) -> Annotated[CallToolResult, RunOutcome]:
        """Run a declared command (see list_commands) and wait for it, up to wait_secs
        (default 30, at most 600). Returns its state, exit code, duration, trigger chain and
        the last lines of its output. A run still going at the deadline is returned with
        state running and its run_id: wait for it with get_run, read its output with
        read_output, stop it with cancel. Only declared commands run; a command line of
        your own never does. Cancelling this tool call cancels the run it started."""
        params: dict[str, Any] = {"command": command, "vars": vars or {}}
        if run_key is not None:  # strict: a retry never runs the command twice
            params.update(runKey=run_key, strict=True)
        started = await self._call(M.M_RUN, params)
        run, existing = started["run"], bool(started.get("existing"))
        try:
            run = await self._wait(run, wait_secs, ctx)
        except anyio.get_cancelled_exc_class():
            if not existing:  # the agent gave up on the call: the run it started stops
                with anyio.CancelScope(shield=True):
                    await self.link.request(M.M_CANCEL, {"runId": run["runId"],
                                                         "reason": CANCEL_REASON})
            raise
        return await self._outcome(run, existing, tail_lines)

    async def trigger(self, event: Annotated[str, Field(
                          min_length=1, max_length=200,
                          description="An event some command lists in its triggers (see "
                                      "list_commands).")],
                      vars: Vars | None = None) -> Annotated[CallToolResult, Triggered]:
        """Fire an event of the workspace's config: it starts every command that lists it in
        its triggers (and cancels those that list it in cancel_on_triggers), and the chains
        the config declares after them. Returns the runs it started and the commands it
        skipped with the reason; it does not wait for them (use get_run). Names of events
        the orchestrator fires itself (command_success:X and the like) are refused."""
        res = await self._call(M.M_TRIGGER, {"event": event, "vars": vars or {}})
        out = Triggered(event=res["event"], started=[_run(r) for r in res["started"]],
                        skipped=[Skipped(**s) for s in res["skipped"]],
                        cancelled=res["cancelled"])
        lines = [f"{event}: started {len(out.started)} run(s)"]
        lines += [f"- {_run_line(r)}" for r in out.started]
        lines += [f"- {s.command} skipped ({s.reason}): {s.message}" for s in out.skipped]
        lines += [f"- {c} cancelled" for c in out.cancelled]
        return _result(out, "\n".join(lines))

    async def get_run(self, run_id: RunId, ctx: Context, wait_secs: WaitSecs = 0,
                      tail_lines: TailLines = 20) -> Annotated[CallToolResult, RunOutcome]:
        """A run's state, exit code, duration and last lines of output. With wait_secs, wait
        up to that long for it to finish first. Cancelling this call only stops the wait."""
        run = (await self._call(M.M_WAIT, {"runId": run_id, "timeoutMs": 0}))["run"]
        run = await self._wait(run, wait_secs, ctx)
        return await self._outcome(run, False, tail_lines)

    async def read_output(self, run_id: RunId,
                          offset: Annotated[int, Field(ge=0, description="Byte offset to "
                                                       "read from.")] = 0,
                          length: Annotated[int, Field(ge=1, le=READ_MAX, description=(
                              f"Bytes to read (at most {READ_MAX}).") )] = READ_MAX,
                          tail_lines: Annotated[int | None, Field(
                              ge=1, le=1000, description="Instead of offset and length: "
                                                         "the last N lines.")] = None
                          ) -> Annotated[CallToolResult, Output]:
        """A run's output (stdout and stderr interleaved), by byte offset and length (at most
        64 KiB per call; continue from next_offset), or its last N lines with tail_lines.
        Works while the run goes on (final false) and for finished runs."""
        if tail_lines is not None:
            probe = await self._call(M.M_READ_OUTPUT, {"runId": run_id, "length": 0})
            offset = max(0, probe["totalSize"] - READ_MAX)
            length = READ_MAX
        got = await self._call(M.M_READ_OUTPUT, {"runId": run_id, "offset": offset,
                                                  "length": length})
        text, size, end = got["text"], got["size"], got["offset"] + got["size"]
        if tail_lines is not None:
            text = _last_lines(text, tail_lines, offset > 0)
            size = len(text.encode())  # exact but where invalid UTF-8 was replaced
            offset = end - size
        out = Output(run_id=run_id, text=text, offset=offset, size=size, next_offset=end,
                     total_size=got["totalSize"], final=got["final"])
        more = "" if out.final and out.next_offset >= out.total_size else (
            f"\n[{out.total_size - out.next_offset} more bytes so far; continue at offset "
            f"{out.next_offset}]" if out.next_offset < out.total_size
            else "\n[the run goes on: more output may come]")
        return _result(out, text + more)

    async def cancel(self, run_id: RunId | None = None, command: CommandName | None = None,
                     reason: Annotated[str | None, Field(max_length=500, description=(
                         "Why (recorded with the run)."))] = None
                     ) -> Annotated[CallToolResult, Cancelled]:
        """Cancel a run (run_id) or every active run of a command (command): its process
        group gets SIGTERM, then SIGKILL after a grace period. Give exactly one of run_id
        and command. Returns how many runs were cancelled (0: none was active)."""
        if (run_id is None) == (command is None):
            raise ToolError("give exactly one of run_id and command")
        params: dict[str, Any] = {"reason": reason or CANCEL_REASON}
        params.update({"runId": run_id} if run_id is not None else {"command": command})
        res = await self._call(M.M_CANCEL, params)
        out = Cancelled(cancelled=res["cancelled"])
        return _result(out, f"cancelled {out.cancelled} run(s)")

    async def history(self, command: CommandName,
                      limit: Annotated[int, Field(ge=1, le=100)] = 10,
                      run_key: Annotated[str | None, Field(min_length=1, max_length=200)
                                         ] = None) -> Annotated[CallToolResult, History]:
        """A command's recent finished runs, most recent first (of one run_key only, if
        given): who started each, why, and how it ended."""
        params: dict[str, Any] = {"command": command, "limit": limit}
        if run_key is not None:
            params["runKey"] = run_key
        res = await self._call(M.M_HISTORY, params)
        out = History(runs=[_run(r) for r in res["runs"]])
        text = "\n".join(f"- {r.end_time or r.start_time}: {_run_line(r)}" for r in out.runs)
        return _result(out, text or f"{command} has no finished run")

    async def preview(self, command: CommandName, vars: Vars | None = None
                      ) -> Annotated[CallToolResult, Preview]:
        """The exact command line a command would run with these variables, its working
        directory and environment, without running it."""
        res = await self._call(M.M_PREVIEW, {"command": command, "vars": vars or {}})
        out = Preview(command=res["command"], resolved=res["resolved"], cwd=res["cwd"],
                      argv=res["argv"], timeout_secs=res["timeoutSecs"], env=res["env"])
        return _result(out, f"{out.resolved}\n(in {out.cwd or '.'})")


READ_ONLY = ("list_commands", "get_run", "read_output", "history", "preview")
"""The tools that change nothing (``readOnlyHint``)."""
TOOL_NAMES = ("list_commands", "run_command", "trigger", "get_run", "read_output", "cancel",
              "history", "preview")
