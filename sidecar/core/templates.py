"""``{{ var }}`` templates: nested resolution with cycle protection, and safe substitution of
caller-supplied values into shell commands.

Two kinds of variables:

* **config variables** (``[variables]``, a command's ``vars``, the orchestrator's constructor
  ``vars``) are authored by whoever wrote the config. They are substituted as written, may
  contain templates themselves (resolved recursively) and may contain shell syntax on purpose.
* **runtime variables** (``vars=`` of ``run_command``/``trigger``; from editors, agents, save
  hooks) are untrusted. They are never re-scanned for templates, and never become part of the
  shell text that runs: :meth:`Resolver.render_shell` marks where each lands and
  :mod:`.shellsafe` replaces the mark with a quoted reference to an environment variable that
  carries the value (or refuses the run where the text would be parsed again).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import VariableResolutionError
from .shellsafe import ShellCommand, bind, placeholder

NAME = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_REF = re.compile(r"\{\{\s*(" + NAME + r")\s*\}\}")
_OPEN = "{{"
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Reference:
    """A ``{{ name }}`` at ``[start, end)`` of the text."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TemplateSyntaxError:
    """A ``{{`` that is not a well-formed reference, at ``[start, end)``."""

    message: str
    start: int
    end: int


def scan(text: str) -> tuple[list[Reference], list[TemplateSyntaxError]]:
    """Every reference in ``text`` and every malformed ``{{``."""
    refs: list[Reference] = []
    errors: list[TemplateSyntaxError] = []
    pos = 0
    while True:
        i = text.find(_OPEN, pos)
        if i < 0:
            return refs, errors
        m = _REF.match(text, i)
        if m:
            refs.append(Reference(m.group(1), i, m.end()))
            pos = m.end()
            continue
        close = text.find("}}", i + 2)
        nxt = text.find(_OPEN, i + 2)
        if close < 0 or (0 <= nxt < close):
            errors.append(TemplateSyntaxError("unterminated '{{' (missing '}}')", i, i + 2))
            pos = i + 2
        else:
            inner = text[i + 2 : close].strip()
            errors.append(TemplateSyntaxError(
                f"invalid variable name '{inner}' in template" if inner
                else "empty template '{{ }}'", i, close + 2))
            pos = close + 2


def find_cycle(variables: Mapping[str, str]) -> list[str] | None:
    """A cycle among variables that refer to each other, as a path ``[a, b, a]``."""
    state: dict[str, int] = {}  # 1 = on stack, 2 = done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for ref in scan(variables[name])[0]:
            if ref.name not in variables:
                continue
            if state.get(ref.name) == 1:
                return [*stack[stack.index(ref.name):], ref.name]
            if ref.name not in state and (found := visit(ref.name)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in variables:
        if name not in state and (found := visit(name)):
            return found
    return None


def variables_used(templates: Iterable[str], config_vars: Mapping[str, str]
                   ) -> dict[str, str | None]:
    """The variables ``templates`` use, directly or through config variables, in order of
    first use: each with its default (its resolved config value; None when it has none, so
    a run must receive it). These are the runtime variables a command accepts."""
    found: dict[str, str | None] = {}
    resolver = Resolver(config_vars)

    def visit(text: str, depth: int) -> None:
        for ref in scan(text)[0]:
            if ref.name in found:
                continue
            try:
                found[ref.name] = resolver.value(ref.name)
            except VariableResolutionError:
                found[ref.name] = None
            if ref.name in config_vars and depth < MAX_DEPTH:
                visit(config_vars[ref.name], depth + 1)

    for text in templates:
        visit(text, 0)
    return found


class Resolver:
    """Resolves templates against config variables (nested) and runtime variables (quoted)."""

    def __init__(
        self, config_vars: Mapping[str, str], runtime_vars: Mapping[str, str] | None = None
    ) -> None:
        self.config_vars = dict(config_vars)
        self.runtime_vars = dict(runtime_vars or {})
        self._cache: dict[str, str] = {}

    def value(self, name: str) -> str:
        """The fully resolved value of a variable (runtime values substituted raw)."""
        if name in self.runtime_vars:
            return self.runtime_vars[name]
        if name not in self._cache:
            self._cache[name] = self._render(self._lookup(name, ()), (name,), None)
        return self._cache[name]

    def _lookup(self, name: str, path: tuple[str, ...]) -> str:
        if name in path:
            raise VariableResolutionError(
                f"Variable cycle: {' -> '.join([*path[path.index(name):], name])}")
        if name not in self.config_vars:
            raise VariableResolutionError(f"Undefined variable '{name}'"
                                          + (f" (used by '{path[-1]}')" if path else ""))
        if len(path) > MAX_DEPTH:
            raise VariableResolutionError(f"Variable nesting deeper than {MAX_DEPTH}: {name}")
        return self.config_vars[name]

    def render(self, template: str, *, shell: bool = False) -> str:
        """Substitute every reference. With ``shell=True`` runtime values are quoted for the
        shell context they land in (the ``display`` of :meth:`render_shell`)."""
        return self.render_shell(template).display if shell else self._render(template, (), None)

    def render_shell(self, template: str) -> ShellCommand:
        """The shell command ``template`` stands for: config variables expanded in place,
        runtime values referenced through the environment (see :mod:`.shellsafe`)."""
        landed: list[str] = []
        text = self._render(template, (), landed)
        return bind(text, [(name, self.runtime_vars[name]) for name in landed])

    def snapshot(self) -> dict[str, str]:
        """Every variable's resolved value (runtime values raw); unresolvable ones skipped."""
        out: dict[str, str] = {}
        for name in {**self.config_vars, **self.runtime_vars}:
            try:
                out[name] = self.value(name)
            except VariableResolutionError:
                continue
        return out

    def _render(self, template: str, path: tuple[str, ...], landed: list[str] | None) -> str:
        """Substitute references; with ``landed``, each runtime value becomes a placeholder
        and its name is appended there."""
        refs, errors = scan(template)
        if errors:
            raise VariableResolutionError(f"{errors[0].message}: {template!r}")
        if not refs:
            return template
        parts: list[str] = []
        pos = 0
        for ref in refs:
            parts.append(template[pos:ref.start])
            if ref.name in self.runtime_vars:
                if landed is None:
                    parts.append(self.runtime_vars[ref.name])
                else:
                    parts.append(placeholder(len(landed)))
                    landed.append(ref.name)
            elif landed is None and not path and ref.name in self._cache:
                parts.append(self._cache[ref.name])
            else:
                # Expanded inline so runtime values nested in config variables are found in
                # the shell context where they finally land.
                nested = self._lookup(ref.name, path)
                parts.append(self._render(nested, (*path, ref.name), landed))
            pos = ref.end
        parts.append(template[pos:])
        return "".join(parts)


def render(
    template: str,
    config_vars: Mapping[str, str],
    runtime_vars: Mapping[str, str] | None = None,
    *,
    shell: bool = False,
) -> str:
    """Convenience wrapper around :class:`Resolver`."""
    return Resolver(config_vars, runtime_vars).render(template, shell=shell)


_SHELL_CHARS = set("|&;<>()$`*?[]{}~#!\n")


def needs_shell(command: str) -> bool:
    """True if ``command`` uses shell syntax (operators, expansions, globs, redirections,
    leading ``VAR=`` assignments); quoted text does not count."""
    state = ""
    escaped = False
    for ch in command:
        if escaped:
            escaped = False
            # shlex.split keeps the backslash of \$ \` inside "..." (sh drops it) and turns an
            # unquoted backslash-newline into a newline (sh removes both): let the shell split.
            if (state == '"' and ch in "$`\n") or (not state and ch == "\n"):
                return True
        elif state == "'":
            if ch == "'":
                state = ""
        elif ch == "\\":
            escaped = True
        elif state == '"':
            if ch in "$`":
                return True
            if ch == '"':
                state = ""
        elif ch in "'\"":
            state = ch
        elif ch in _SHELL_CHARS:
            return True
    if state or escaped:
        return True  # let the shell report unbalanced quotes
    try:
        first = shlex.split(command)[:1]
    except ValueError:
        return True
    return bool(first) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", first[0]) is not None
