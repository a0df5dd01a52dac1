"""Runtime values over the protocol (``sidecar/run``, ``sidecar/trigger``, ``didSave``) never
become shell code; a value that would be re-parsed is refused with VariableError."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import request, start, write_config
from pygls.exceptions import JsonRpcException

CONFIG = """
[variables]
f = ""

[[command]]
name = "Show"
triggers = ["go"]
command = '''echo "dir: $(dirname {{ f }}) `printf %s {{ f }}` $(printf %s '{{ f }}')"'''

[[command]]
name = "Eval"
command = '''eval "echo {{ f }}"'''
"""


@pytest.mark.timeout(30)
async def test_run_and_trigger_keep_values_literal(root: Path) -> None:
    write_config(root, CONFIG)
    mark = root / "PWNED"
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        for value in (f"x; touch {mark}", f"x'; touch {mark}; '", f"$(touch {mark})"):
            res = await request(client, "sidecar/run",
                                {"command": "Show", "vars": {"f": value}, "wait": True})
            assert res["run"]["state"] == "success"
            out = await request(client, "sidecar/readOutput", {"runId": res["run"]["runId"]})
            assert out["text"].endswith(f" {value} {value}\n")
            if "'" not in value:  # people see the value (quoted for its place)
                assert value in res["run"]["resolvedCommand"]
            fired = await request(client, "sidecar/trigger",
                                  {"event": "go", "vars": {"f": value}})
            run_id = fired["started"][0]["runId"]
            await rec.wait_for(lambda rid=run_id: any(
                u["state"] == "success" for u in rec.updates(rid)))
        assert not mark.exists()


@pytest.mark.timeout(30)
async def test_reparsed_value_is_refused_before_any_run(root: Path) -> None:
    write_config(root, CONFIG)
    async with start(root) as client:
        with pytest.raises(JsonRpcException) as info:
            await request(client, "sidecar/run", {"command": "Eval", "vars": {"f": "x"}})
        assert info.value.code == -32016
        assert "'f'" in info.value.message and "eval" in info.value.message
        hist = await request(client, "sidecar/history", {"command": "Eval"})
        assert hist["runs"] == []
