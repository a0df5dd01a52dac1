"""Runtime values never become shell code, in any position of any shell syntax.

Randomly generated nested templates (bare words, ``"…"``, ``'…'``, ``$( )``, backquotes,
``$(( ))``, here-documents, re-parsing commands, nested in each other and through config
variables that embed runtime ones) × hostile values, run by the real ``/bin/sh`` (and bash):
no marker file is ever created, and each value arrives byte for byte where it is not refused.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from corehelp import orch_of

from sidecar import CommandConfig, CommandOrchestrator, RunState
from sidecar.core.errors import VariableResolutionError
from sidecar.core.runs import ResolvedCommand
from sidecar.core.shellsafe import bind, placeholder
from sidecar.core.templates import Resolver

BASH = shutil.which("bash")


class Refused(Exception):
    """The generator's verdict: this value must be refused in this template."""


Expect = Callable[[str], str]  # value → what the word expands to (raises Refused)


def _refuse(v: str) -> str:
    raise Refused


def _arith(v: str) -> str:
    if re.fullmatch(r"[+-]?[0-9]+", v) is None:
        raise Refused
    return str(int(v) + 1)


def _strip_nl(s: str) -> str:
    return s.rstrip("\n")  # command substitution drops trailing newlines


class Gen:
    """Builds one random template: words whose expansions are predicted per value."""

    LITERALS = ["", "a", "b c", "x:y", "k.", "Q_9"]

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.config_vars: dict[str, str] = {}

    def lit(self) -> str:
        return self.rng.choice(self.LITERALS)

    def maybe_config(self, text: str, in_backquote: bool) -> str:
        """Sometimes move a fragment into a config variable (not inside backquotes: their
        escaping applies to the text as written, not to what a variable expands to)."""
        if in_backquote or self.rng.random() < 0.6:
            return text
        name = f"c{len(self.config_vars)}"
        self.config_vars[name] = text
        return "{{ " + name + " }}"

    def word(self, depth: int, bq: bool = False) -> tuple[str, Expect]:
        """Text for one bare word, and its expansion."""
        kinds = ["bare", "sq", "dq"]
        if depth < 3:
            kinds += ["dq", "dq"]
        kind = self.rng.choice(kinds)
        if kind == "bare":
            return self.maybe_config("{{ x }}", bq), lambda v: v
        if kind == "sq":
            a, b = self.lit(), self.lit()
            return self.maybe_config(f"'{a}{{{{ x }}}}{b}'", bq), lambda v: a + v + b
        inner, exp = self.dq_body(depth, bq)
        return self.maybe_config(f'"{inner}"', bq), exp

    def dq_body(self, depth: int, bq: bool) -> tuple[str, Expect]:
        """Text inside ``"…"``: literals around one nested construct."""
        a, b = self.lit(), self.lit()
        choices = ["value"]
        if depth < 3:
            choices += ["cmdsub", "backquote", "arith", "heredoc", "qheredoc", "reparse"]
        kind = self.rng.choice(choices)
        mid, exp = "{{ x }}", (lambda v: v)
        if kind == "cmdsub":
            w, wexp = self.word(depth + 1, bq)
            mid, exp = f"$(printf %s {w})", (lambda v: _strip_nl(wexp(v)))
        elif kind == "backquote":
            w, wexp = self.word(depth + 1, True)
            esc = w.replace("\\", "\\\\").replace("`", "\\`")
            mid, exp = f"`printf %s {esc}`", (lambda v: _strip_nl(wexp(v)))
        elif kind == "arith":
            mid, exp = "$(( {{ x }} + 1 ))", _arith
        elif kind == "qheredoc" and not bq:
            mid, exp = "$(cat <<'EOF'\n{{ x }}\nEOF\n)", _refuse
        elif kind == "heredoc" and not bq:
            w, wexp = self.word(depth + 1, bq)
            c, d = self.lit(), self.lit()
            # one delimiter per depth: a nested here-document's end must not end this one
            mid, exp = (f"$(cat <<E{depth}\n{c}{{{{ x }}}}{d}$(printf %s {w})\nE{depth}\n)",
                        lambda v: _strip_nl(c + v + d + _strip_nl(wexp(v))))
        elif kind == "reparse":
            w, _ = self.word(depth + 1, bq)
            mid, exp = self.rng.choice([
                f"$(eval printf %s {w})",
                f"$(sh -c 'printf %s \"$1\"' sh {w})",
                f"$(bash -c 'printf %s \"$1\"' sh {w})",
                f"$(printf %s {w} | sh -c cat)",
                f"$(printf %s {w} | sh)",
                f"$(printf %s {w} | xargs -0 sh -c 'printf %s \"$1\"' sh)",
            ]), _refuse
        return a + mid + b, (lambda v: a + exp(v) + b)

    def command(self) -> tuple[str, Expect]:
        words = [self.word(0) for _ in range(self.rng.randint(1, 3))]
        text = "printf '[%s]' " + " ".join(w for w, _ in words)
        if self.rng.random() < 0.2:
            text += "  # note: {{ x }}"

        def exp(v: str) -> str:
            return "".join(f"[{f(v)}]" for _, f in words)
        return text, exp


def hostile_values(mark: Path) -> list[str]:
    m = str(mark)
    return [
        f"x; touch {m}", f"$(touch {m})", f"`touch {m}`", f"x' ; touch {m} ; echo '",
        f'x" ; touch {m} ; echo "', f"x && touch {m}", f"x\ntouch {m}",
        f"\"$(touch {m})\"", f"'$(touch {m})'", f"\\$(touch {m})", f"\\`touch {m}\\`",
        f"EOF\ntouch {m}\nEOF", f"\nEOF\n$(touch {m})\n", f"a[$(touch {m})]",
        f"x[`touch {m}`]", f"$((1))$(touch {m})", f"}}; touch {m}; {{", f"); touch {m}; (",
        "${IFS}", "*", "~", "-n", "", "42", "-7", "0", "é ✓ 中", "a\tb  c\n\n",
    ]


def spawn(rc: ResolvedCommand, shell: str) -> bytes:
    """Run exactly what the orchestrator would spawn, with ``shell`` as /bin/sh."""
    if rc.argv is not None:
        args = rc.argv
    else:
        args = [shell, "-c", rc.script or rc.command]
    proc = subprocess.run(args, env=rc.env, cwd=rc.cwd, capture_output=True, timeout=10)
    return proc.stdout


def random_cases(rng: random.Random, templates: int, per_template: int, values: list[str]
                 ) -> Iterator[tuple[CommandOrchestrator, str, str, str | None]]:
    """(orchestrator with command ``C``, template, value, expected output or None = refused)."""
    for _ in range(templates):
        gen = Gen(rng)
        template, expect = gen.command()
        orch = orch_of(CommandConfig(name="C", command=template), vars=gen.config_vars)
        for value in rng.sample(values, per_template):
            try:
                want: str | None = expect(value)
            except Refused:
                want = None
            yield orch, template, value, want


@pytest.mark.parametrize("seed", range(8))
def test_random_nested_templates_never_inject(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    mark = tmp_path / "PWNED"
    values = hostile_values(mark)
    shells = ["/bin/sh"] + ([BASH] if BASH else [])
    checked = refused = 0
    for orch, template, value, want in random_cases(rng, 20, 10, values):
        try:
            rc = orch.preview_command("C", vars={"x": value})
        except VariableResolutionError as exc:
            assert want is None, f"refused but safe: {template!r} {value!r}: {exc}"
            assert "'x'" in str(exc)
            refused += 1
            continue
        assert want is not None, f"not refused: {template!r} with {value!r} → {rc.script}"
        if rc.argv is None and len(value) > 3:
            assert value not in (rc.script or rc.command)  # never in the shell's text
        for shell in shells:
            out = spawn(rc, shell)
            assert not mark.exists(), f"{shell} {template!r} {value!r}"
            assert out.decode() == want, (shell, template, value, rc.script)
        checked += 1
    assert checked and refused  # both outcomes exercised by every seed


async def test_random_templates_through_run_command(tmp_path: Path) -> None:
    """The same generator end to end: the orchestrator spawns, the output is the value."""
    rng = random.Random(99)
    mark = tmp_path / "PWNED"
    values = hostile_values(mark)
    ran = 0
    for orch, _, value, want in random_cases(rng, 10, 3, values):
        if want is None:
            with pytest.raises(VariableResolutionError):
                await orch.run_command("C", vars={"x": value})
            assert orch.get_history("C") == []
            continue
        result = await (await orch.run_command("C", vars={"x": value})).wait(10)
        assert result.state is RunState.SUCCESS, result.output
        assert result.output == want
        assert not mark.exists()
        ran += 1
    assert ran


# ------------------------------------------------------------------------------------------
# The reproductions from the report, through every caller
# ------------------------------------------------------------------------------------------

REPORTED = [
    '''echo "dir: $(dirname {{ f }})"''',
    '''echo "$(printf %s '{{ f }}')"''',
    '''echo "a `printf %s {{ f }}` b"''',
    '''echo "a `printf %s '{{ f }}'` b"''',
]


@pytest.mark.parametrize("template", REPORTED)
async def test_reported_injections_stay_text(tmp_path: Path, template: str) -> None:
    mark = tmp_path / "PWNED"
    orch = orch_of(CommandConfig(name="Show", command=template, triggers=["go"]),
                   vars={"f": ""})
    for value in (f"x; touch {mark}", f"x'; touch {mark}; '", f'x"; touch {mark}; "'):
        result = await (await orch.run_command("Show", vars={"f": value})).wait(10)
        assert result.state is RunState.SUCCESS, result.output
        outcome = await orch.trigger("go", vars={"f": value})
        await outcome.started[0].wait(10)
        assert not mark.exists(), value
        if "dirname" not in template:
            assert value in result.output


def test_saved_file_name_cannot_inject(tmp_path: Path) -> None:
    """A file named ``$(touch X).txt`` reaching ``"…$(printf %s {{ saved_file_relative }})…"``
    through ``sidecar save``."""
    (tmp_path / "cmdorc.toml").write_text(
        '[variables]\nsaved_file_relative = ""\n'
        '[on_save]\n"*.txt" = "saved"\n'
        '[[command]]\nname = "Echo"\ntriggers = ["saved"]\n'
        'command = \'\'\'echo "got: $(printf %s {{ saved_file_relative }})"\'\'\'\n')
    name = "$(touch PWNED).txt"
    (tmp_path / name).write_text("")
    proc = subprocess.run([sys.executable, "-m", "sidecar", "save", "--wait", name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert f"got: {name}" in proc.stdout
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------------
# Where a reference is not enough: refusals name the variable and the reason
# ------------------------------------------------------------------------------------------

REFUSED = [
    ('eval "echo {{ x }}"', "eval"),
    ("sh -c 'echo {{ x }}'", "sh"),
    ("bash -c \"echo {{ x }}\"", "bash"),
    ("sh -c 'echo \"$1\"' sh {{ x }}", "sh"),
    ("/bin/bash -ec 'echo {{ x }}'", "bash"),
    ("env FOO=1 sh -c 'echo {{ x }}'", "sh"),
    ("printf %s {{ x }} | sh", "standard input"),
    ("printf %s {{ x }} | xargs sh -c 'echo $0'", "sh"),
    ("sh <<EOF\necho {{ x }}\nEOF", "standard input"),
    ("cat <<EOF | bash\necho {{ x }}\nEOF", "standard input"),
    ("cat <<'EOF'\n{{ x }}\nEOF", "quoted delimiter"),
    ("cat <<\\EOF\n{{ x }}\nEOF", "quoted delimiter"),
    ("cat <<{{ x }}\nhi\n", "delimiter"),
    ("echo ${HOME:-{{ x }}}", "parameter expansion"),
    ("echo $'a{{ x }}'", "ANSI-C"),
    ("echo ${{ x }}", "'$'"),
    ("ssh host echo {{ x }}", "ssh"),
    ("python3 -c 'print(\"{{ x }}\")'", "python"),
    ("su -c 'echo {{ x }}' nobody", "su"),
    ("sudo sh -c 'echo {{ x }}'", "sh"),
    ("trap 'echo {{ x }}' EXIT", "trap"),
    ("echo \"$(eval echo {{ x }})\"", "eval"),
    ("echo `eval echo {{ x }}`", "eval"),
    ("echo $(( {{ x }} + 1 ))", "integer"),
    ("(( {{ x }} > 1 )) && echo big", "integer"),
    ("echo $[ {{ x }} ]", "integer"),
    ("let n={{ x }}", "integer"),
    ("[[ {{ x }} -eq 3 ]]", "integer"),
    ("a[{{ x }}]=1", "integer"),
    ('a["{{ x }}"]=1', "integer"),
    ("declare -i n={{ x }}", "integer"),
    ("printf -v {{ x }} %s 1", "variable name"),
    ("read {{ x }} < /dev/null", "variable name"),
    ("export {{ x }}=1", "variable name"),
    ("unset {{ x }}", "variable name"),
    ("[[ -v {{ x }} ]]", "variable name"),
    ("echo 'unterminated {{ x }}", "cannot be read"),
    ("alias a='echo {{ x }}'", "alias"),
    (". <(printf %s {{ x }})", "'.'"),
    ("bash <(printf %s {{ x }})", "standard input"),
    ("PS4={{ x }}; set -x; true", "PS4"),
    ("export PATH={{ x }}:$PATH", "PATH"),
    ("LD_PRELOAD=\"{{ x }}\" ls", "LD_PRELOAD"),
]


@pytest.mark.parametrize("template,reason", REFUSED)
def test_refusals_name_the_variable_and_reason(template: str, reason: str) -> None:
    with pytest.raises(VariableResolutionError) as info:
        Resolver({}, {"x": "a[$(touch /tmp/never)]"}).render_shell(template)
    msg = str(info.value)
    assert "'x'" in msg and reason in msg, msg


ALLOWED = [
    ("export X={{ x }}; printf %s \"$X\"", "v a l"),
    ("printf %s {{ x }} | cat", "v a l"),
    ("read -r line <<EOF\n{{ x }}\nEOF\nprintf %s \"$line\"", "v a l"),
    ("sh -c 'printf %s \"$0\"' ok; printf %s {{ x }}", "okv a l"),  # sh is another command
    ("case {{ x }} in (v*) printf yes;; *) printf no;; esac", "yes"),
    ("case {{ x }} in v*) printf %s {{ x }};; esac", "v a l"),
    ("echo $(( {{ n }} * 2 ))", "84\n"),
    ("printf %s {{ x }} # it's {{ x }}\nprintf %s '{{ x }}'", "v a lv a l"),
    ("for w in {{ x }}; do printf '<%s>' \"$w\"; done", "<v a l>"),
    ("bash ./script.sh {{ x }} 2>/dev/null || printf %s {{ x }}", "v a l"),
]


@pytest.mark.parametrize("template,want", ALLOWED)
def test_safe_positions_run_with_the_exact_value(tmp_path: Path, template: str,
                                                 want: str) -> None:
    shell = Resolver({}, {"x": "v a l", "n": "42"}).render_shell(template)
    assert "v a l" not in shell.script
    env = {**os.environ, **shell.env}
    out = subprocess.run(["/bin/sh", "-c", shell.script], env=env, cwd=tmp_path,
                         capture_output=True, timeout=10)
    assert out.stdout.decode() == want, (shell.script, out.stderr)


def test_display_shows_values_quoted_in_place() -> None:
    shell = Resolver({}, {"f": "x; rm -rf ~"}).render_shell('echo "d: $(dirname {{ f }})"')
    assert shell.display == "echo \"d: $(dirname 'x; rm -rf ~')\""
    assert shell.script == 'echo "d: $(dirname "${SIDECAR_VAR_f}")"'
    assert shell.env == {"SIDECAR_VAR_f": "x; rm -rf ~"}


def test_integers_and_names_are_matched_whole() -> None:
    for template in ("echo $(( {{ x }} ))", "printf -v {{ x }} %s 1"):
        with pytest.raises(VariableResolutionError):
            Resolver({}, {"x": "5\n"}).render_shell(template)
    assert Resolver({}, {"x": "-5"}).render_shell("echo $(( {{ x }} ))").display == \
        "echo $(( -5 ))"


def test_nul_and_lone_surrogates_are_refused() -> None:
    for bad in ("a\x00b", "\ud800"):
        with pytest.raises(VariableResolutionError, match="'x'"):
            Resolver({}, {"x": bad}).render_shell("echo {{ x }}")


def test_private_use_marker_in_the_config_is_refused() -> None:
    with pytest.raises(VariableResolutionError, match="U\\+E000"):
        bind("echo \ue000 " + placeholder(0), [("x", "v")])


def test_distinct_env_names_for_names_that_sanitise_alike() -> None:
    shell = Resolver({}, {"a.b": "1", "a-b": "2"}).render_shell("echo {{ a.b }} {{ a-b }} |cat")
    assert sorted(shell.env.values()) == ["1", "2"]
    assert len(shell.env) == 2
