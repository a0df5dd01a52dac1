"""Templates: nested resolution, cycles, variable precedence, and no shell injection through
runtime variables."""

from __future__ import annotations

import pytest
from corehelp import orch_of

from sidecar import CommandConfig, RunState, VariableResolutionError
from sidecar.core.templates import Resolver, find_cycle, needs_shell, render, scan

pytestmark = pytest.mark.timeout(30)


def test_nested_resolution() -> None:
    config = {"base_directory": ".", "tests_directory": "{{ base_directory }}/tests",
              "cmd": "pytest {{tests_directory}} -q"}
    assert render("{{ cmd }}", config) == "pytest ./tests -q"
    assert Resolver(config).value("tests_directory") == "./tests"
    assert Resolver(config).snapshot() == {"base_directory": ".", "tests_directory": "./tests",
                                           "cmd": "pytest ./tests -q"}


def test_cycle_and_undefined_raise() -> None:
    cyclic = {"a": "{{ b }}", "b": "x {{ c }}", "c": "{{ a }}"}
    with pytest.raises(VariableResolutionError, match="cycle"):
        render("{{ a }}", cyclic)
    assert find_cycle(cyclic) == ["a", "b", "c", "a"]
    with pytest.raises(VariableResolutionError, match="cycle"):
        render("{{ self }}", {"self": "{{ self }}"})
    with pytest.raises(VariableResolutionError, match="Undefined variable 'nope'"):
        render("echo {{ nope }}", {})
    with pytest.raises(VariableResolutionError):
        render("echo {{ unterminated", {})
    assert Resolver(cyclic).snapshot() == {}


def test_scan_reports_malformed_templates() -> None:
    refs, errors = scan("{{ a }} {{ }} {{ b-c.d }} {{ 1x }}")
    assert [r.name for r in refs] == ["a", "b-c.d"]
    assert [e.message for e in errors] == ["empty template '{{ }}'",
                                           "invalid variable name '1x' in template"]


def test_runtime_values_are_not_rescanned() -> None:
    assert render("{{ a }}", {}, {"a": "{{ secret }}"}) == "{{ secret }}"
    assert render("echo {{ a }}", {"secret": "s"}, {"a": "{{ secret }}"}, shell=True) == \
        "echo '{{ secret }}'"


async def test_variable_precedence_and_cycle_in_orchestrator() -> None:
    orch = orch_of(
        CommandConfig(name="P", command="echo {{ a }} {{ b }} {{ c }}", vars={"b": "cmd-b"}),
        CommandConfig(name="Loop", command="echo {{ x }}", vars={"x": "{{ y }}", "y": "{{ x }}"}),
        vars={"a": "ctor-a", "b": "ctor-b", "c": "ctor-c"},
    )
    assert orch.preview_command("P").command == "echo ctor-a cmd-b ctor-c"
    result = await (await orch.run_command("P", vars={"c": "run-c"})).wait(10)
    assert result.output == "ctor-a cmd-b run-c\n"
    # per-run vars apply to that run only
    assert (await (await orch.run_command("P")).wait(10)).output == "ctor-a cmd-b ctor-c\n"
    with pytest.raises(VariableResolutionError):
        await orch.run_command("Loop")
    with pytest.raises(VariableResolutionError):
        orch.preview_command("Loop")
    assert orch.get_status("Loop").state == "never_run"
    outcome = await orch.trigger("nothing")
    assert outcome.skipped == []


async def test_unresolvable_triggered_command_is_skipped() -> None:
    orch = orch_of(CommandConfig(name="U", command="echo {{ missing }}", triggers=["go"]))
    outcome = await orch.trigger("go")
    assert outcome.started == []
    assert [s[:2] for s in outcome.skipped] == [("U", "variable_error")]


# ------------------------------------------------------------------------------------------
# Runtime variables cannot inject shell syntax
# ------------------------------------------------------------------------------------------

PAYLOADS = [
    "x; touch {tmp}/pwned",
    "$(touch {tmp}/pwned)",
    "`touch {tmp}/pwned`",
    "x' ; touch {tmp}/pwned ; echo '",
    'x" ; touch {tmp}/pwned ; echo "',
    "x && touch {tmp}/pwned",
    "x | touch {tmp}/pwned",
    "x\ntouch {tmp}/pwned",
    "${{IFS}}touch${{IFS}}{tmp}/pwned",
    "-n $(touch {tmp}/pwned)",
]

TEMPLATES = [
    # (command, config vars)   -- direct use of the runtime variable
    ("printf '%s\\n' {{ x }}", {}),
    ("printf '%s\\n' \"{{ x }}\"", {}),
    ("printf '%s\\n' '{{ x }}'", {}),
    # the same through the shell (pipe forces /bin/sh -c)
    ("printf '%s\\n' {{ x }} | cat", {}),
    ("printf '%s\\n' \"{{ x }}\" | cat", {}),
    ("printf '%s\\n' '{{ x }}' | cat", {}),
    # nested: a config variable references the runtime variable
    ("printf '%s\\n' {{ wrapped }}", {"wrapped": "{{ x }}"}),
    ("printf '%s\\n' \"{{ wrapped }}\"", {"wrapped": "{{ x }}"}),
    ("printf '%s\\n' '{{ wrapped }}'", {"wrapped": "{{ x }}"}),
    ("printf '%s\\n' {{ wrapped }} | cat", {"wrapped": "{{ deeper }}", "deeper": "{{ x }}"}),
    ("printf '%s\\n' \"{{ wrapped }}\" | cat", {"wrapped": "{{ x }}"}),
    ("printf '%s\\n' '{{ wrapped }}' | cat", {"wrapped": "{{ x }}"}),
]


@pytest.mark.parametrize("template,config_vars", TEMPLATES)
@pytest.mark.parametrize("payload", PAYLOADS)
async def test_runtime_vars_cannot_inject(tmp_path, template: str, config_vars: dict,
                                          payload: str) -> None:
    value = payload.format(tmp=tmp_path)
    orch = orch_of(CommandConfig(name="Echo", command=template, vars=config_vars,
                                 triggers=["go"]))
    handle = await orch.run_command("Echo", vars={"x": value})
    result = await handle.wait(10)
    assert not (tmp_path / "pwned").exists(), result.resolved_command.command
    assert result.state is RunState.SUCCESS, result.output
    assert result.output == value + "\n"
    # trigger(vars=...) takes the same path
    outcome = await orch.trigger("go", vars={"x": value})
    again = await outcome.started[0].wait(10)
    assert again.output == value + "\n"
    assert not (tmp_path / "pwned").exists()


async def test_config_variables_may_use_shell_syntax_on_purpose(tmp_path) -> None:
    orch = orch_of(CommandConfig(name="S", command="{{ pipeline }}",
                                 vars={"pipeline": "echo a; echo b | tr b c"}))
    preview = orch.preview_command("S")
    assert preview.argv is None
    assert (await (await orch.run_command("S")).wait(10)).output == "a\nc\n"


def test_quoting_contexts_render() -> None:
    r = Resolver({}, {"x": "a'b\"c$d"})
    assert r.render("echo {{ x }}", shell=True) == "echo 'a'\"'\"'b\"c$d'"
    assert r.render('echo "{{ x }}"', shell=True) == 'echo "a\'b\\"c\\$d"'
    assert r.render("echo '{{ x }}'", shell=True) == "echo 'a'\\''b\"c$d'"
    assert r.render("echo {{ x }}", shell=False) == "echo a'b\"c$d"
    assert needs_shell(r.render("echo {{ x }}", shell=True)) is False
