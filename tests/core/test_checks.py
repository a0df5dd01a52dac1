from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.core.checks import CheckReport, check_files
from sidecar.core.config import read_source
from sidecar.core.errors import ConfigValidationError
from sidecar.core.loading import load_configs
from sidecar.core.problems import Problem, Severity, Span

# The Quick Start config of cmdorc's README, unchanged.
QUICK_START = """\
[variables]
base_directory = "."
tests_directory = "{{ base_directory }}/tests"

[[command]]
name = "Lint"
triggers = ["changes_applied"]
command = "ruff check {{ base_directory }}"
cancel_on_triggers = ["prompt_send", "exit"]
max_concurrent = 1
on_retrigger = "cancel_and_restart"
debounce_in_ms = 500  # Wait 500ms after last trigger before running
timeout_secs = 300
keep_in_memory = 3
loop_detection = true

[[command]]
name = "Tests"
triggers = ["command_success:Lint", "Tests"]
command = "pytest {{ tests_directory }} -q"
timeout_secs = 180
keep_in_memory = 5
loop_detection = true
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check(tmp_path: Path, **files: str) -> CheckReport:
    paths = [write(tmp_path, name.replace("_", ".", 1) if "_toml" in name else name, text)
             for name, text in files.items()]
    return check_files([read_source(p) for p in paths])


def only(report: CheckReport, code: str) -> list[Problem]:
    return [p for p in report.problems if p.code == code]


def one(report: CheckReport, code: str) -> Problem:
    found = only(report, code)
    assert len(found) == 1, report.problems
    return found[0]


def test_quick_start_has_no_errors(tmp_path: Path) -> None:
    report = check(tmp_path, cmdorc_toml=QUICK_START)
    assert report.config is not None
    assert [p for p in report.problems if p.severity <= Severity.WARNING] == []
    assert [c.name for c in report.config.commands] == ["Lint", "Tests"]
    assert report.config.vars["tests_directory"] == "{{ base_directory }}/tests"
    assert report.config.base_dir == tmp_path.resolve()
    assert report.config.sources == {"Lint": str(tmp_path / "cmdorc.toml"),
                                     "Tests": str(tmp_path / "cmdorc.toml")}
    # 'changes_applied' is fired by the user: only a hint
    hint = one(report, "unemitted-trigger")
    assert hint.severity == Severity.HINT
    assert hint.span == Span(6, 12, 6, 29)
    assert str(tmp_path / "cmdorc.toml") in report.index


def test_quick_start_loads_with_load_configs(tmp_path: Path) -> None:
    config = load_configs([write(tmp_path, "cmdorc.toml", QUICK_START)])
    assert [c.name for c in config.commands] == ["Lint", "Tests"]
    assert config.commands[0].debounce_in_ms == 500
    assert config.output_storage.directory == str(tmp_path.resolve() / ".cmdorc/outputs")


def test_toml_syntax_error(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ncommand = "echo" x\n'
    report = check(tmp_path, cmdorc_toml=text)
    assert report.config is None
    problem = one(report, "toml-syntax")
    assert problem.severity == Severity.ERROR
    assert problem.span == Span(2, 17, 2, 18)
    assert problem.format().startswith(f"{tmp_path / 'cmdorc.toml'}:3:18: error: TOML syntax")


def test_load_configs_error_carries_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "cmdorc.toml", '[[command]]\nname = "A"\ncommand = "echo" x\n')
    with pytest.raises(ConfigValidationError) as info:
        load_configs([path])
    assert [p.code for p in info.value.problems] == ["toml-syntax"]
    assert info.value.file == str(path)
    assert (info.value.line, info.value.column) == (3, 18)


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ncommand = "echo"\ntriger = ["x"]\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "unknown-key")
    assert problem.severity == Severity.ERROR
    assert problem.span == Span(3, 0, 3, 6)
    assert "did you mean 'triggers'?" in problem.message
    assert report.config is None


def test_description_and_agent_keys(tmp_path: Path) -> None:
    good = ('[[command]]\nname = "A"\ncommand = "echo"\ndescription = "Says it."\n'
            'agent = false\n')
    report = check(tmp_path, sidecar_toml=good)
    assert report.errors == [] and report.config is not None
    assert not only(report, "wrong-type") and not only(report, "unknown-key")
    (cmd,) = report.config.commands
    assert (cmd.description, cmd.agent) == ("Says it.", False)
    bad = '[[command]]\nname = "A"\ncommand = "echo"\ndescription = 3\nagent = "no"\n'
    found = only(check(tmp_path, sidecar_toml=bad), "wrong-type")
    assert [(p.span.line, p.message.split()[0]) for p in found] == [
        (3, "'description'"), (4, "'agent'")]


def test_wrong_type(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ncommand = "echo"\ntriggers = ["A"]\nmax_concurrent = "2"\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "wrong-type")
    assert problem.span == Span(4, 17, 4, 20)
    assert "integer" in problem.message


def test_missing_key_points_at_command_header(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ncommand = "echo"\n\n[[command]]\nname = "B"\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "missing-key")
    assert problem.span == Span(4, 0, 4, 11)


def test_unterminated_template(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ntriggers = ["A"]\ncommand = "echo {{ root"\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "unterminated-template")
    assert problem.severity == Severity.ERROR
    assert problem.span == Span(3, 16, 3, 18)
    assert report.config is None


def test_invalid_template(tmp_path: Path) -> None:
    text = '[variables]\nx = "a {{ 1bad }} b"\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "invalid-template")
    assert problem.span == Span(1, 7, 1, 17)


def test_undefined_variable_exact_span(tmp_path: Path) -> None:
    text = (
        '[variables]\nroot = "/app"\n\n'
        '[[command]]\nname = "A"\ntriggers = ["A"]\n'
        'command = "ls {{ root }} {{ target }} {{ who }}"\n'
        'vars = { who = "" }\n'
        'env = { "X" = "{{ missing }}" }\n'
    )
    report = check(tmp_path, cmdorc_toml=text)
    found = only(report, "undefined-variable")
    assert [(p.span, p.severity) for p in found] == [
        # A warning: a cmdorc.toml may rely on run-time vars= (it must still load).
        (Span(6, 25, 6, 37), Severity.WARNING),  # {{ target }}; {{ who }} is declared in vars
        (Span(8, 15, 8, 28), Severity.WARNING),
    ]
    assert "Undefined variable 'target'" in found[0].message
    assert "define it in [variables] or the command's vars" in found[0].message
    assert report.config is not None  # loads: the values may come at run time


def test_undefined_variable_with_escapes_in_string(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ntriggers = ["A"]\ncommand = "echo \\"q\\" {{ nope }}"\n'
    report = check(tmp_path, cmdorc_toml=text)
    assert one(report, "undefined-variable").span == Span(3, 22, 3, 32)


def test_global_variable_may_use_command_vars(tmp_path: Path) -> None:
    text = (
        '[variables]\npath = "src/{{ pkg }}"\n\n'
        '[[command]]\nname = "A"\ntriggers = ["A"]\ncommand = "ls {{ path }}"\n'
        'vars = { pkg = "core" }\n'
    )
    report = check(tmp_path, cmdorc_toml=text)
    assert only(report, "undefined-variable") == []
    assert report.config is not None


def test_variable_cycle(tmp_path: Path) -> None:
    text = '[variables]\na = "x{{ b }}"\nb = "{{ c }}"\nc = "{{ a }}/y"\nok = "{{ a }}"\n'
    report = check(tmp_path, cmdorc_toml=text)
    found = only(report, "variable-cycle")
    assert [p.span for p in found] == [Span(1, 6, 1, 13), Span(2, 5, 2, 12), Span(3, 5, 3, 12)]
    assert all(p.message == "Variable cycle: a -> b -> c -> a" for p in found)
    assert all(p.severity == Severity.ERROR for p in found)
    assert report.config is None


CYCLE = """\
[[command]]
name = "A"
triggers = ["start", "command_success:B"]
command = "echo a"

[[command]]
name = "B"
triggers = ["command_failed:A"]
command = "echo b"
"""


def test_trigger_cycle_spans_and_warning(tmp_path: Path) -> None:
    report = check(tmp_path, cmdorc_toml=CYCLE)
    found = only(report, "trigger-cycle")
    assert [p.span for p in found] == [Span(2, 21, 2, 40), Span(7, 12, 7, 30)]
    assert all(p.severity == Severity.WARNING for p in found)
    assert all(p.message.startswith(
        "trigger cycle: A -> command_failed:A -> B -> command_success:B -> A") for p in found)
    assert report.config is not None  # loop_detection stops it at run time


def test_trigger_cycle_without_loop_detection_is_an_error(tmp_path: Path) -> None:
    text = CYCLE.replace('command = "echo b"', 'command = "echo b"\nloop_detection = false')
    report = check(tmp_path, cmdorc_toml=text)
    found = only(report, "trigger-cycle")
    assert len(found) == 2
    assert all(p.severity == Severity.ERROR for p in found)
    assert "loop_detection = false" in found[0].message
    assert report.config is None


def test_self_trigger_cycle(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ntriggers = ["go", "command_*:A"]\ncommand = "x"\n'
    report = check(tmp_path, cmdorc_toml=text)
    problem = one(report, "trigger-cycle")
    assert problem.span == Span(2, 18, 2, 31)
    assert problem.message.startswith("trigger cycle: A -> command_started:A -> A")


def test_unknown_command(tmp_path: Path) -> None:
    text = ('[[command]]\nname = "A"\ntriggers = ["command_success:Nope"]\n'
            'cancel_on_triggers = ["command_started:Gone"]\ncommand = "x"\n')
    report = check(tmp_path, cmdorc_toml=text)
    found = only(report, "unknown-command")
    assert [p.span for p in found] == [Span(2, 12, 2, 34), Span(3, 22, 3, 44)]
    assert "unknown command 'Nope'" in found[0].message
    assert only(report, "unemitted-trigger") == []
    assert report.config is None


def test_unknown_command_suggests_a_close_name(tmp_path: Path) -> None:
    text = ('[[command]]\nname = "Lint"\ncommand = "x"\n'
            '[[command]]\nname = "Tests"\ncommand = "y"\n'
            'triggers = ["command_success:Lnt"]\ncancel_on_triggers = ["command_started:tests"]\n'
            '[[command]]\nname = "Other"\ncommand = "z"\ntriggers = ["command_failed:Zzz"]\n')
    report = check(tmp_path, cmdorc_toml=text)
    messages = [p.message for p in only(report, "unknown-command")]
    assert messages == [
        "'command_success:Lnt' names unknown command 'Lnt'; did you mean 'Lint'?",
        "'command_started:tests' names unknown command 'tests'; did you mean 'Tests'?",
        "'command_failed:Zzz' names unknown command 'Zzz'",
    ]


def test_hints(tmp_path: Path) -> None:
    text = """\
[on_save]
"*.py" = "saved"

[[command]]
name = "A"
triggers = ["A", "saved", "deploy", "orchestrator_started", "command_success:B"]
command = "x"

[[command]]
name = "B"
command = "y"
"""
    report = check(tmp_path, cmdorc_toml=text)
    hint = one(report, "unemitted-trigger")
    assert hint.span == Span(5, 26, 5, 34)
    assert "'deploy'" in hint.message
    untriggered = one(report, "untriggered-command")
    assert untriggered.span == Span(9, 7, 9, 10)
    assert untriggered.severity == Severity.HINT
    assert report.config is not None
    assert report.config.on_save == {"*.py": ["saved"]}


def test_duplicate_command_across_files(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        base_toml='[[command]]\nname = "Tests"\ntriggers = ["t"]\ncommand = "a"\n',
        more_toml='\n[[command]]\nname = "Other"\ntriggers = ["t"]\ncommand = "b"\n\n'
                  '[[command]]\nname = "Tests"\ntriggers = ["t"]\ncommand = "c"\n',
    )
    problem = one(report, "duplicate-command")
    assert problem.file == str(tmp_path / "more.toml")
    assert problem.span == Span(7, 7, 7, 14)
    assert problem.severity == Severity.ERROR
    assert "Duplicate command name 'Tests'" in problem.message
    assert problem.related == ((str(tmp_path / "base.toml"), Span(1, 7, 1, 14),
                                "'Tests' first defined here"),)
    assert report.config is None


def test_duplicate_command_in_one_file_raises(tmp_path: Path) -> None:
    text = '[[command]]\nname = "A"\ncommand = "a"\n[[command]]\nname = "A"\ncommand = "b"\n'
    path = write(tmp_path, "cmdorc.toml", text)
    with pytest.raises(ConfigValidationError) as info:
        load_configs([path])
    assert [(p.code, p.span) for p in info.value.problems] == [
        ("duplicate-command", Span(4, 7, 4, 10))]


def test_variable_override_warning_across_files(tmp_path: Path) -> None:
    base = ('[variables]\nroot = "/app"\nenv = "dev"\n\n[output_storage]\n'
            'directory = "out"\nkeep_history = 10\n')
    tests = ('[variables]\nenv = "dev"\nroot = "/other"\n\n[output_storage]\nkeep_history = 5\n\n'
             '[[command]]\nname = "Unit"\ntriggers = ["u"]\ncommand = "pytest {{ root }}"\n')
    report = check(tmp_path, base_toml=base, tests_toml=tests)
    warnings = only(report, "variable-override")
    assert [(p.file, p.span, p.message) for p in warnings] == [
        (str(tmp_path / "tests.toml"), Span(2, 0, 2, 4),
         """Variable 'root' overridden by tests.toml (was: "/app", now: "/other")"""),
        (str(tmp_path / "tests.toml"), Span(5, 0, 5, 12),
         "output_storage.keep_history overridden by tests.toml (was: 10, now: 5)"),
    ]
    assert warnings[0].severity == Severity.WARNING
    assert warnings[0].related[0][:2] == (str(tmp_path / "base.toml"), Span(1, 0, 1, 4))
    config = report.config
    assert config is not None
    assert config.vars == {"root": "/other", "env": "dev"}
    assert config.output_storage.keep_history == 5
    assert config.output_storage.directory == str(tmp_path.resolve() / "out")
    assert config.sources == {"Unit": str(tmp_path / "tests.toml")}


def test_load_configs_merges_and_logs_override(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = write(tmp_path, "base.toml", '[variables]\nroot = "/app"\n')
    tests = write(tmp_path, "tests.toml", '[variables]\nroot = "/other"\n\n'
                  '[[command]]\nname = "Unit"\ntriggers = ["u"]\ncommand = "pytest {{ root }}"\n')
    with caplog.at_level("WARNING", logger="sidecar.config"):
        config = load_configs([base, tests])
    assert config.vars["root"] == "/other"
    assert config.base_dir == tmp_path.resolve()
    assert "Variable 'root' overridden by tests.toml" in caplog.text


def test_problems_are_sorted_by_file_then_position(tmp_path: Path) -> None:
    text = ('[[command]]\nname = "A"\ncommand = "{{ x }}"\ntriggers = ["command_success:Z"]\n'
            'bogus = 1\n')
    report = check(tmp_path, cmdorc_toml=text)
    assert [(p.code, p.span.line) for p in report.problems] == [
        ("undefined-variable", 2), ("unknown-command", 3), ("unknown-key", 4)]
