"""A stand-in linter (stdlib only): syntax, tabs, trailing whitespace, long lines."""

import ast
import sys
from pathlib import Path

MAX = 100
problems = 0
files = [p for arg in sys.argv[1:] for p in sorted(Path(arg).rglob("*.py"))]
for path in files:
    text = path.read_text(encoding="utf-8")
    try:
        ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        print(f"{path}:{exc.lineno}:{exc.offset}: E999 {exc.msg}")
        problems += 1
        continue
    for no, line in enumerate(text.splitlines(), 1):
        if "\t" in line:
            print(f"{path}:{no}:{line.index(chr(9)) + 1}: W191 tab")
            problems += 1
        if line != line.rstrip():
            print(f"{path}:{no}:{len(line.rstrip()) + 1}: W291 trailing whitespace")
            problems += 1
        if len(line) > MAX:
            print(f"{path}:{no}:{MAX + 1}: E501 line too long ({len(line)} > {MAX})")
            problems += 1
print(f"checked {len(files)} file(s): {problems} problem(s)")
sys.exit(1 if problems else 0)
