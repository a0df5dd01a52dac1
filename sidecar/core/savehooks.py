"""Save hooks: ``[on_save]`` maps file globs to triggers.

Globs are relative to the config's directory, ``/``-separated: ``*`` matches within one path
segment, ``**`` any number of segments (``src/**/*.py`` matches ``src/a.py`` and
``src/x/y/a.py``), ``?`` one character, ``[abc]`` / ``[!abc]`` a class. A glob without ``/`` matches the
file name at any depth (``*.py``), like ``.gitignore``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

SAVED_FILE = "saved_file"
SAVED_FILE_RELATIVE = "saved_file_relative"


@lru_cache(maxsize=512)
def _glob_regex(glob: str) -> re.Pattern[str]:
    pat = glob.strip().lstrip("/")
    if pat.startswith("./"):
        pat = pat[2:]
    if "/" not in pat:
        pat = "**/" + pat
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pat.find("]", i + 2 if pat.startswith("[!", i) else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def glob_matches(glob: str, relative_path: str) -> bool:
    return _glob_regex(glob).fullmatch(relative_path.replace(os.sep, "/")) is not None


def triggers_for_save(
    on_save: Mapping[str, Sequence[str]], base_dir: Path | None, path: str | os.PathLike[str]
) -> tuple[list[str], dict[str, str]]:
    """The triggers a save of ``path`` fires (config order, no repeats) and the runtime
    variables to pass with them. Paths outside ``base_dir`` fire nothing."""
    absolute = Path(path).absolute()
    base = (base_dir or Path.cwd()).absolute()
    try:
        relative = absolute.relative_to(base).as_posix()
    except ValueError:
        return [], {}
    fired: list[str] = []
    for glob, triggers in on_save.items():
        if glob_matches(glob, relative):
            fired.extend(t for t in triggers if t not in fired)
    variables = {SAVED_FILE: str(absolute), SAVED_FILE_RELATIVE: relative} if fired else {}
    return fired, variables
