"""How caller-supplied (runtime) values reach a shell command without ever becoming shell code.

A runtime value is never spliced into the text ``/bin/sh -c`` runs. The command is rendered
with a placeholder token at each place a runtime value lands; this module reads that text the
way a POSIX shell would (quotes, ``$( )``, backticks, ``$(( ))``, ``${ }``, here-documents,
comments, ``case`` patterns, nesting of any depth) to learn each placeholder's context, then
replaces it with a *reference* to an environment variable that carries the value:
``"${SIDECAR_VAR_x}"`` in a bare word (a quoted expansion is one field: never split, globbed or
re-parsed), ``${SIDECAR_VAR_x}`` inside ``"…"`` or an unquoted here-document (already quoted;
the value cannot forge the delimiter, it is not in the text) and ``'"${SIDECAR_VAR_x}"'``
inside ``'…'`` (the quote closed around the reference).

The result of an expansion is never parsed as shell syntax again, so a value can only become
code where the text around it asks for a second parse. There the run is refused with
:class:`VariableResolutionError`, naming the variable and the reason (:func:`_runs_code`,
:func:`_word_rule` and the reader's own cases list them; README "Safety" says it for users):
commands that run an argument or their standard input as code (``eval``, ``sh -c``, ``ssh``,
``python -c``, ``| sh``, ``sh <<EOF`` …), a quoted here-document, ``${…}``, ``$'…'``, right after
``$``, a here-document delimiter, and assignments to variables that name code (``PS4``,
``PATH``…). In arithmetic and array subscripts, which bash evaluates recursively, a value must
be a decimal integer; in bash's variable-name arguments, a plain name.

``display`` is the same command with the values filled in and quoted for their context: what
people see (``resolvedCommand``, ``preview``), and what is exec'd directly (no shell at all)
when it has no shell syntax.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import VariableResolutionError

PLACEHOLDER_OPEN = "\ue000"
PLACEHOLDER_CLOSE = "\ue001"
_PLACEHOLDER = re.compile(PLACEHOLDER_OPEN + r"(\d+)" + PLACEHOLDER_CLOSE)
ENV_PREFIX = "SIDECAR_VAR_"

# Contexts a placeholder can be found in.
BARE, DQ, SQ, HEREDOC, COMMENT, ARITH = "bare", "dq", "sq", "heredoc", "comment", "arith"

_SHELLS = frozenset({
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "ash", "yash", "posh", "busybox",
    "fish", "csh", "tcsh", "rbash", "pwsh", "powershell"})
# Run their arguments (or what they name) as shell code, always.
_ALWAYS_REPARSE = frozenset({"eval", "trap", "ssh", "watch", "parallel", "alias", "source", "."})
# Variables whose value the shell or the dynamic loader interprets (PS4 is expanded, with
# command substitution, by `set -x`; ENV/BASH_ENV name scripts to source; PATH and LD_* choose
# the code that runs).
_CODE_VARIABLES = frozenset({
    "PS0", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND", "ENV", "BASH_ENV", "PATH",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_LOADABLES_PATH", "SHELLOPTS",
    "BASHOPTS"})
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
# Run an argument (or their standard input) as code: option letters and long options that
# take inline code. Shells and interpreters with no operand read their program from stdin.
_CODE_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{shell: ("cs", ("--command",)) for shell in _SHELLS},
    "su": ("c", ("--command", "--session-command")),
    "runuser": ("c", ("--command", "--session-command")),
    "script": ("c", ("--command",)),
    "flock": ("c", ("--command",)),
    "sudo": ("si", ("--shell", "--login")),
    "doas": ("s", ()),
    "python": ("c", ()),
    "pypy": ("c", ()),
    "perl": ("eE", ()),
    "ruby": ("e", ()),
    "node": ("ep", ("--eval", "--print")),
    "nodejs": ("ep", ("--eval", "--print")),
    "php": ("rRBE", ()),
    "lua": ("e", ()),
    "osascript": ("e", ()),
    "tclsh": ("", ()),
    "Rscript": ("e", ()),
}
_READS_STDIN_PROGRAM = _SHELLS | {
    "python", "pypy", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "Rscript"}
_ARITH_TEST_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
# bash builtins that take variable names (a name's subscript is evaluated as arithmetic).
_DECLARERS = frozenset({"declare", "typeset", "local", "export", "readonly"})
_NAME_TAKERS = {"read": "pdtnNui", "unset": "", "mapfile": "dnOsuCc", "readarray": "dnOsuCc"}
_INTEGER = re.compile(r"[+-]?[0-9]+")  # fullmatch
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch
_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[[^\]]*$")
_KEYWORDS = frozenset({
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "!", "{",
    "}", "case", "esac", "select", "function", "time", "coproc"})
_OPERATOR_CHARS = set(";&|<>()\n")
_BLANKS = " \t"

# The kinds of rule an occurrence may be under (with a reason): refused outright, or accepted
# only as a decimal integer or as a plain variable name.
REFUSED, INTEGER, NAME = "refused", "integer", "name"
_SUBSCRIPT_RULE = (INTEGER, "an array subscript is evaluated as arithmetic")
_ARITH_RULE = (INTEGER, "it is inside arithmetic, which evaluates text")


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """A rendered shell command: ``script`` runs (values referenced through ``env``);
    ``display`` shows the values quoted in place."""

    display: str
    script: str
    env: dict[str, str] = field(default_factory=dict)


class _Cmd:
    """One simple command's words (quote-removed, approximately), filled as it is read, and
    the pipeline it belongs to."""

    __slots__ = ("pipeline", "words")

    def __init__(self, pipeline: list[_Cmd] | None = None) -> None:
        self.words: list[str] = []
        self.pipeline: list[_Cmd] = pipeline if pipeline is not None else []
        self.pipeline.append(self)


@dataclass(slots=True)
class _Occurrence:
    """Where one placeholder stands: its quoting context, the simple commands around it
    (innermost last), which word of the innermost it is part of, the text before it, and the
    rule it is under: (``REFUSED`` | ``INTEGER`` | ``NAME``, why), or None."""

    index: int
    context: str
    commands: tuple[_Cmd, ...]
    word_index: int
    prefix: str
    rule: tuple[str, str] | None = None


class ShellSyntaxUnclear(Exception):
    """The text cannot be read with confidence (unterminated quote or substitution)."""


class _Reader:
    """Reads shell text the way a POSIX shell tokenizes it and records the context of every
    placeholder. Nested command lists (``$( )``, backquotes, here-document bodies) are read by
    sub-readers that share the output and know the commands enclosing them."""

    def __init__(self, text: str, out: list[_Occurrence], outer: tuple[_Cmd, ...] = (),
                 pos: int = 0) -> None:
        self.text = text
        self.pos = pos
        self.out = out
        self.outer = outer
        self.cmd = _Cmd()
        self.word: list[str] | None = None  # the word being read (None between words)
        self.heredocs: list[tuple[str, bool, bool, _Cmd]] = []  # delimiter, quoted, -, owner
        self.case_state: list[str] = []  # per open `case`: "word", "in", "pattern", "body"

    # ----------------------------------------------------------------- helpers
    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def _record(self, index: int, context: str, prefix: str = "", *,
                cmd: _Cmd | None = None, rule: tuple[str, str] | None = None) -> None:
        cmd = cmd or self.cmd
        if rule is None and _SUBSCRIPT.search(prefix):
            rule = _SUBSCRIPT_RULE
        self.out.append(_Occurrence(index, context, (*self.outer, cmd), len(cmd.words),
                                    prefix, rule))

    def _record_all(self, start: int, end: int, context: str, *, cmd: _Cmd | None = None,
                    rule: tuple[str, str] | None = None) -> None:
        for m in _PLACEHOLDER.finditer(self.text, start, end):
            self._record(int(m.group(1)), context, cmd=cmd, rule=rule)

    def _placeholder(self) -> tuple[int, str]:
        """Consume the placeholder that starts here: its index and its text."""
        m = _PLACEHOLDER.match(self.text, self.pos)
        if not m:
            raise ShellSyntaxUnclear("stray placeholder character")
        self.pos = m.end()
        return int(m.group(1)), m.group(0)

    def _word_so_far(self) -> str:
        return "".join(self.word or ())

    def _add(self, s: str) -> None:
        if self.word is None:
            self.word = []
        self.word.append(s)

    def _end_word(self) -> None:
        if self.word is None:
            return
        w = "".join(self.word)
        self.word = None
        state = self.case_state[-1] if self.case_state else None
        if state == "word":
            self.case_state[-1] = "in"
            return
        if state == "in" and w == "in":
            self.case_state[-1] = "pattern"
            return
        if state == "pattern":
            if w == "esac":
                self.case_state.pop()
            return
        if not self.cmd.words and w in _KEYWORDS:
            if w == "case":
                self.case_state.append("word")
            elif w == "esac" and self.case_state:
                self.case_state.pop()
            return
        self.cmd.words.append(w)

    def _end_command(self, pipe: bool = False) -> None:
        self._end_word()
        if self.cmd.words or pipe:
            self.cmd = _Cmd(self.cmd.pipeline if pipe else None)

    # ------------------------------------------------------------- command lists
    def command_list(self, closer: str = "") -> None:
        """Bare context until ``closer`` (the ``)`` of ``$(``) at depth 0, or the end."""
        depth = 0
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == PLACEHOLDER_OPEN:
                prefix = self._word_so_far()
                index, token = self._placeholder()
                self._record(index, BARE, prefix)
                self._add(token)
            elif ch == "\\":
                nxt = self._peek(1)
                self.pos += 2
                if nxt != "\n":
                    self._add(nxt)
            elif ch == "'":
                self._add(self._single_quoted(self._word_so_far()))
            elif ch == '"':
                self.pos += 1
                self._add(self._double_quoted(self._word_so_far()))
            elif ch == "`":
                self.pos += 1
                self._backquoted(in_dq=False)
                self._add("`")
            elif ch == "$":
                self._dollar(BARE, self._word_so_far())
                self._add("$")
            elif ch == "#" and self.word is None:
                self._comment()
            elif ch in _BLANKS:
                self._end_word()
                self.pos += 1
            elif ch == ")" and self.case_state and self.case_state[-1] == "pattern":
                self._end_word()
                self.case_state[-1] = "body"
                self.pos += 1
            elif ch == closer and depth == 0:
                self._end_command()
                self.pos += 1
                return
            elif ch in _OPERATOR_CHARS:
                depth += self._operator(ch)
            else:
                self._add(ch)
                self.pos += 1
        self._end_command()
        if closer:
            raise ShellSyntaxUnclear(f"missing '{closer}'")

    def _operator(self, ch: str) -> int:
        """Consume an operator; returns the change of parenthesis depth."""
        two = self.text[self.pos:self.pos + 2]
        if two == "<<" and self._peek(2) != "<":
            self._end_word()
            self.pos += 2
            strip = self._peek() == "-"
            self.pos += strip
            self._heredoc_operator(strip)
            return 0
        if ch in "<>":
            self._end_word()
            if self._peek(1) == "(":  # process substitution <( ) >( )
                self.pos += 2
                self._nested_list(")")
            else:
                self.pos += 1
            return 0
        if two == "((" and not self.cmd.words and self.word is None:
            self.pos += 2
            self._arith("))")
            return 0
        if ch == "(" and self.case_state and self.case_state[-1] == "pattern":
            self.pos += 1
            return 0
        if ch == "|" and two != "||":
            self._end_command(pipe=True)
            self.pos += 2 if two == "|&" else 1
            return 0
        self._end_command()
        if self.case_state and two in (";;", ";&"):
            self.case_state[-1] = "pattern"
            self.pos += 2
            return 0
        self.pos += 2 if two in ("||", "&&") else 1
        if ch == "\n":
            self._read_heredocs()
        return {"(": 1, ")": -1}.get(ch, 0)

    def _nested_list(self, closer: str) -> None:
        """A command list in place (``$( )``, ``<( )``), enclosed by the current command."""
        sub = _Reader(self.text, self.out, (*self.outer, self.cmd), self.pos)
        sub.command_list(closer)
        self.pos = sub.pos

    # ------------------------------------------------------------- quoting
    def _single_quoted(self, prefix: str) -> str:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise ShellSyntaxUnclear("unterminated single quote")
        body = self.text[self.pos + 1:end]
        for m in _PLACEHOLDER.finditer(body):
            self._record(int(m.group(1)), SQ, prefix + body[:m.start()])
        self.pos = end + 1
        return body

    def _double_quoted(self, prefix: str, heredoc: bool = False) -> str:
        """After the opening ``"`` to the closing one; or a whole here-document body."""
        chars: list[str] = [prefix]
        context = HEREDOC if heredoc else DQ
        special = "$`\\\n" if heredoc else '$`"\\\n'
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == PLACEHOLDER_OPEN:
                so_far = "" if heredoc else "".join(chars)
                index, token = self._placeholder()
                self._record(index, context, so_far)
                chars.append(token)
            elif ch == "\\":
                nxt = self._peek(1)
                chars.append(nxt if nxt and nxt in special else "\\" + nxt)
                self.pos += 2
            elif ch == '"' and not heredoc:
                self.pos += 1
                return "".join(chars[1:])
            elif ch == "`":
                self.pos += 1
                self._backquoted(in_dq=not heredoc)
                chars.append("`")
            elif ch == "$":
                self._dollar(context, "".join(chars))
                chars.append("$")
            else:
                chars.append(ch)
                self.pos += 1
        if heredoc:
            return "".join(chars[1:])
        raise ShellSyntaxUnclear("unterminated double quote")

    def _backquoted(self, in_dq: bool) -> None:
        """After the opening backquote: the body, with backslash escapes undone, is read as a
        command list of its own."""
        body: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\":
                nxt = self._peek(1)
                body.append(nxt if nxt and (nxt in "$`\\" or (in_dq and nxt == '"'))
                            else "\\" + nxt)
                self.pos += 2
            elif ch == "`":
                self.pos += 1
                _Reader("".join(body), self.out, (*self.outer, self.cmd)).command_list()
                return
            else:
                body.append(ch)
                self.pos += 1
        raise ShellSyntaxUnclear("unterminated backquote")

    def _dollar(self, context: str, prefix: str) -> None:
        """At a ``$``: substitutions and expansions."""
        self.pos += 1
        nxt = self._peek()
        if self.text.startswith("((", self.pos):
            self.pos += 2
            self._arith("))")
        elif nxt == "(":
            self.pos += 1
            self._nested_list(")")
        elif nxt == "[":
            self.pos += 1
            self._arith("]")
        elif nxt == "{":
            self._parameter()
        elif nxt == "'" and context == BARE:
            self._ansi_c_quoted()
        elif nxt == PLACEHOLDER_OPEN:
            index, _ = self._placeholder()
            self._record(index, context, prefix, rule=(REFUSED, "it directly follows '$'"))

    def _ansi_c_quoted(self) -> None:
        """At the ``'`` of ``$'…'``: values inside are refused (no expansion there)."""
        i = self.pos + 1
        while i < len(self.text) and self.text[i] != "'":
            i += 2 if self.text[i] == "\\" else 1
        if i >= len(self.text):
            raise ShellSyntaxUnclear("unterminated $'")
        self._record_all(self.pos, i, SQ,
                         rule=(REFUSED, "ANSI-C quoting $'…' does not expand variables"))
        self.pos = i + 1

    def _parameter(self) -> None:
        """At the ``{`` of ``${…}``: to the matching ``}``; values inside are refused."""
        depth = 0
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\":
                self.pos += 2
                continue
            if ch == "'":
                end = self.text.find("'", self.pos + 1)
                self.pos = (end if end >= 0 else len(self.text)) + 1
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    self._record_all(start, self.pos, DQ, rule=(
                        REFUSED, "it is inside a parameter expansion ${…}"))
                    return
            self.pos += 1
        raise ShellSyntaxUnclear("unterminated ${")

    def _arith(self, closer: str) -> None:
        """After ``$((``/``((``/``$[``: to the matching closer; values must be integers."""
        depth = 0
        start = self.pos
        while self.pos < len(self.text):
            if depth == 0 and self.text.startswith(closer, self.pos):
                self._record_all(start, self.pos, ARITH, rule=_ARITH_RULE)
                self.pos += len(closer)
                return
            ch = self.text[self.pos]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif ch == "\\":
                self.pos += 1
            self.pos += 1
        raise ShellSyntaxUnclear(f"missing '{closer}'")

    def _comment(self) -> None:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        self._record_all(self.pos, end, COMMENT)
        self.pos = end

    # ------------------------------------------------------------ here-documents
    def _heredoc_operator(self, strip: bool) -> None:
        while self._peek() and self._peek() in _BLANKS:
            self.pos += 1
        start = self.pos
        quoted = False
        word: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in _BLANKS or ch in _OPERATOR_CHARS:
                break
            if ch == "\\":
                quoted = True
                word.append(self._peek(1))
                self.pos += 2
            elif ch in "'\"":
                quoted = True
                end = self.text.find(ch, self.pos + 1)
                if end < 0:
                    raise ShellSyntaxUnclear("unterminated quote in here-document delimiter")
                word.append(self.text[self.pos + 1:end])
                self.pos = end + 1
            else:
                word.append(ch)
                self.pos += 1
        self._record_all(start, self.pos, BARE,
                         rule=(REFUSED, "it is in a here-document delimiter"))
        self.heredocs.append(("".join(word), quoted, strip, self.cmd))

    def _read_heredocs(self) -> None:
        """After a newline: the bodies of the here-documents opened on the line before."""
        pending, self.heredocs = self.heredocs, []
        for delimiter, quoted, strip, owner in pending:
            start = end = self.pos
            while self.pos < len(self.text):
                nl = self.text.find("\n", self.pos)
                line_end = len(self.text) if nl < 0 else nl
                line = self.text[self.pos:line_end]
                end = self.pos
                self.pos = min(line_end + 1, len(self.text))
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                end = self.pos
            if quoted:
                self._record_all(start, end, HEREDOC, cmd=owner, rule=(
                    REFUSED, "a here-document with a quoted delimiter does not expand variables"))
            else:
                sub = _Reader(self.text[start:end], self.out, self.outer)
                sub.cmd = owner
                sub._double_quoted("", heredoc=True)


# ---------------------------------------------------------------------- the rules
def _base(word: str) -> str:
    """``/usr/bin/python3.11`` → ``python``."""
    return re.sub(r"[0-9.]+$", "", word.rsplit("/", 1)[-1]) or word


def _has_option(words: Sequence[str], letters: str, longs: tuple[str, ...]) -> bool:
    for w in words:
        if w.startswith("--"):
            if any(w == o or w.startswith(o + "=") for o in longs):
                return True
        elif letters and re.fullmatch(r"-[A-Za-z]+", w) and any(c in w for c in letters):
            return True
    return False


def _runs_code(words: Sequence[str]) -> str | None:
    """Why a simple command with these words runs one of its arguments, or its standard
    input, as code (the value may reach it through either)."""
    for i, word in enumerate(words):
        name = _base(word)
        if name in _ALWAYS_REPARSE:
            return f"'{name}' runs its arguments as shell code"
        if name in _CODE_OPTIONS:
            letters, longs = _CODE_OPTIONS[name]
            rest = words[i + 1:]
            if _has_option(rest, letters, longs):
                return f"'{name}' with an inline-code option runs an argument as code"
            if name in _READS_STDIN_PROGRAM and all(w.startswith("-") for w in rest):
                return f"'{name}' reads a program from its standard input"
    return None


def _word_rule(occ: _Occurrence) -> tuple[str, str] | None:
    """The rule for a value in a word the shell interprets
    beyond expanding it: assignments to code variables, bash's arithmetic and variable-name
    arguments."""
    assigned = _ASSIGNMENT.match(occ.prefix)
    if assigned and assigned.group(1) in _CODE_VARIABLES:
        return REFUSED, f"the shell runs code named by {assigned.group(1)}"
    words = occ.commands[-1].words
    i = occ.word_index
    if not words or i == 0:
        return None
    first, prev = words[0], words[i - 1]
    if first == "let":
        return INTEGER, "'let' evaluates its arguments as arithmetic"
    if first == "[[" and any(w in _ARITH_TEST_OPS for w in words):
        return INTEGER, "'[[ … -eq … ]]' evaluates its operands as arithmetic"
    if first in ("[[", "[", "test") and prev == "-v":
        return NAME, "'-v' takes a variable name"
    if first == "printf" and prev == "-v":
        return NAME, "'printf -v' takes a variable name"
    if first == "getopts" and i == 2:
        return NAME, "'getopts' takes a variable name"
    if first in _NAME_TAKERS:
        option_argument = prev.startswith("-") and prev[-1] in _NAME_TAKERS[first]
        if not option_argument:
            return NAME, f"'{first}' takes variable names"
    if first in _DECLARERS:
        if not assigned:
            return NAME, f"'{first}' takes variable names before '='"
        if _has_option(words[1:i], "i", ()):
            return INTEGER, f"'{first} -i' evaluates the value as arithmetic"
    return None


def analyse(text: str) -> dict[int, _Occurrence]:
    """Every placeholder of ``text`` with its context and the rules that apply to it.
    Raises :class:`ShellSyntaxUnclear`."""
    out: list[_Occurrence] = []
    _Reader(text, out).command_list()
    for occ in out:
        if occ.rule is None or occ.rule[0] != REFUSED:
            why = next((reason for cmd in occ.commands for member in cmd.pipeline
                        if (reason := _runs_code(member.words))), None)
            if why is not None:
                occ.rule = (REFUSED, why)
        if occ.rule is None and occ.context in (BARE, DQ, SQ):
            occ.rule = _word_rule(occ)
    return {occ.index: occ for occ in out}


def placeholder(index: int) -> str:
    """The token :meth:`Resolver.render_shell` puts where runtime value ``index`` lands."""
    return f"{PLACEHOLDER_OPEN}{index}{PLACEHOLDER_CLOSE}"


def check_value(name: str, value: str) -> None:
    """A runtime value must be passable to a process: no NUL, encodable."""
    if "\x00" in value:
        raise VariableResolutionError(f"Runtime variable '{name}' contains a NUL character")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise VariableResolutionError(
            f"Runtime variable '{name}' is not valid text (lone surrogate)") from None


def _env_names(names: Sequence[str]) -> dict[str, str]:
    """A distinct environment variable name for each runtime variable name."""
    out: dict[str, str] = {}
    for name in names:
        if name in out:
            continue
        base = ENV_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, n = base, 1
        while candidate in out.values():
            n += 1
            candidate = f"{base}_{n}"
        out[name] = candidate
    return out


def _display(context: str, value: str) -> str:
    if context == DQ:
        return re.sub(r'(["\\$`])', r"\\\1", value)
    if context == SQ:
        return value.replace("'", "'\\''")
    if context == HEREDOC:
        return re.sub(r"([\\$`])", r"\\\1", value)
    if context == ARITH:
        return value
    return shlex.quote(value)


def _reference(context: str, env_name: str) -> str:
    ref = "${" + env_name + "}"
    if context in (DQ, HEREDOC, ARITH):
        return ref
    if context == SQ:
        return "'\"" + ref + "\"'"
    return '"' + ref + '"'


def bind(text: str, values: Sequence[tuple[str, str]]) -> ShellCommand:
    """``text`` holds :func:`placeholder` ``i`` where ``values[i]`` (name, value) lands: the
    command with references instead (``script``, values in ``env``) and with the values quoted
    in place (``display``). Raises :class:`VariableResolutionError` naming the variable and
    the reason when a value lands where the text would be parsed again."""
    for name, value in values:
        check_value(name, value)
    if not values:
        return ShellCommand(display=text, script=text)
    if text.count(PLACEHOLDER_OPEN) != len(values) or text.count(PLACEHOLDER_CLOSE) != len(values):
        raise VariableResolutionError(
            "The command contains the private-use characters U+E000/U+E001, which runtime "
            "variables cannot be combined with")
    try:
        found = analyse(text)
    except ShellSyntaxUnclear as exc:
        raise VariableResolutionError(
            f"Runtime variable '{values[0][0]}' refused: the command's shell syntax cannot be "
            f"read ({exc})") from None
    for i, (name, value) in enumerate(values):
        occ = found.get(i)
        if occ is None:
            raise VariableResolutionError(
                f"Runtime variable '{name}' refused: its place in the command cannot be read")
        kind, why = occ.rule or ("", "")
        if kind == REFUSED:
            raise VariableResolutionError(f"Runtime variable '{name}' refused: {why}")
        if kind == INTEGER and not _INTEGER.fullmatch(value):
            raise VariableResolutionError(
                f"Runtime variable '{name}' must be an integer here: {why}")
        if kind == NAME and not _IDENTIFIER.fullmatch(value):
            raise VariableResolutionError(
                f"Runtime variable '{name}' must be a plain variable name here: {why}")
    env_names = _env_names([name for name, _ in values])

    def display(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return _display(found[i].context, values[i][1])

    def script(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return _reference(found[i].context, env_names[values[i][0]])

    return ShellCommand(display=_PLACEHOLDER.sub(display, text),
                        script=_PLACEHOLDER.sub(script, text),
                        env={env_names[name]: value for name, value in values})
