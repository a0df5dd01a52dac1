"""A config document nested too deeply for tomllib: a diagnostic, and features that answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, write_config

VALID = """\
[[command]]
name = "Lint"
command = "echo lint"
"""


def deep_tables(levels: int) -> str:
    return "deep = " + "{ a = " * levels + "1" + " }" * levels + "\n"


@pytest.mark.timeout(30)
async def test_deeply_nested_values_are_a_diagnostic_not_a_crash(root: Path) -> None:
    path = write_config(root, VALID)
    uri = path.as_uri()
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)

        async def diagnostics(version: int) -> list[dict[str, Any]]:
            msg = await asyncio.wait_for(raw.read_until(
                lambda m: m.get("method") == "textDocument/publishDiagnostics"
                and m["params"]["uri"] == uri and m["params"].get("version") == version), 10)
            found: list[dict[str, Any]] = msg["params"]["diagnostics"]
            return found

        text = VALID + deep_tables(500)
        raw.send("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "toml", "version": 1, "text": text}}, notify=True)
        (diag,) = await diagnostics(1)
        assert diag["code"] == "too-deep" and "nested too deeply" in diag["message"]
        assert diag["range"]["start"] == {"line": 3, "character": 7}  # at the value
        assert diag["severity"] == 1

        at_value = {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 400}}
        for method, params in [
            ("textDocument/hover", at_value),
            ("textDocument/completion", at_value),
            ("textDocument/definition", at_value),
            ("textDocument/codeLens", {"textDocument": {"uri": uri}}),
            ("textDocument/documentSymbol", {"textDocument": {"uri": uri}}),
        ]:
            i = raw.send(method, params)
            reply = await raw.response(i)
            assert "error" not in reply, (method, reply)
        assert reply["result"] is not None  # the symbols of the rest of the file

        # Valid TOML, but deeper than tomllib can go from the server: a diagnostic for
        # this version too (before, the previous version's diagnostics stayed).
        raw.send("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"text": VALID + deep_tables(350)}]}, notify=True)
        (diag,) = await diagnostics(2)
        assert diag["code"] == "too-deep"
        raw.send("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": 3},
            "contentChanges": [{"text": VALID + deep_tables(20)}]}, notify=True)
        codes = [d["code"] for d in await diagnostics(3)]
        assert "unknown-key" in codes and "too-deep" not in codes  # `deep` is not a key
        i = raw.send("sidecar/commands")
        assert [c["name"] for c in (await raw.response(i))["result"]["commands"]] == ["Lint"]
