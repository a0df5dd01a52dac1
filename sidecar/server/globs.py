"""``[on_save]`` glob matching: paths relative to the config's ``base_dir``, ``/``-separated.

``*`` matches within one path segment, ``**`` any number of segments (``src/**/*.py`` matches
``src/a.py`` and ``src/x/y/a.py``), ``?`` one character, ``[abc]`` / ``[!abc]`` a class.
A pattern without ``/`` matches the file name at any depth (``*.py`` ≡ ``**/*.py``), like
``.gitignore``.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    pat = pattern.strip().lstrip("/")
    if pat.startswith("./"):
        pat = pat[2:]
    if "/" not in pat:
        pat = "**/" + pat
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat.startswith("**", i):
                i += 2
                if i < n and pat[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 2 if pat.startswith("[!", i) else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def glob_match(pattern: str, relative_path: str) -> bool:
    return glob_regex(pattern).fullmatch(relative_path) is not None
