"""Summarise the stored runs (metadata.toml files written by output storage)."""

import sys
import tomllib
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".cmdorc/outputs")
for command_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    runs = []
    for meta in command_dir.glob("*/metadata.toml"):
        data = tomllib.loads(meta.read_text(encoding="utf-8"))
        runs.append(data)
    ok = sum(r.get("state") == "success" for r in runs)
    print(f"{command_dir.name}: {len(runs)} stored run(s), {ok} successful")
