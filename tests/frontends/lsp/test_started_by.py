"""Who started a run (``startedBy``), the runs that led to it (``upstreamRunIds``) and
``sidecar/wait`` with ``chain``, end to end over stdio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import request, start, write_config
from lsprotocol import types as lsp

CONFIG = """
[on_save]
"*.py" = "saved"

[[command]]
name = "Boot"
command = "echo boot"
triggers = ["orchestrator_started"]

[[command]]
name = "Lint"
command = "echo lint"
triggers = ["saved"]

[[command]]
name = "Tests"
command = "echo tests"
triggers = ["command_success:Lint"]
"""
FINAL = ("success", "failed", "cancelled")


@pytest.mark.timeout(30)
async def test_runs_name_the_client_and_the_runs_that_led_to_them(root: Path) -> None:
    write_config(root, CONFIG)
    saved = root / "mod.py"
    saved.write_text("x = 1\n")
    async with start(root, client_name="Neovim") as client:
        rec = client.rec  # type: ignore[attr-defined]
        lint = (await request(client, "sidecar/run", {"command": "Lint"}))["run"]
        assert (lint["startedBy"], lint["upstreamRunIds"]) == ("Neovim", [])

        waited = await request(client, "sidecar/wait",
                               {"runId": lint["runId"], "chain": True, "timeoutMs": 10000})
        assert waited["timedOut"] is False
        runs = waited["runs"]
        assert [r["command"] for r in runs] == ["Lint", "Tests"]
        assert runs[0] == waited["run"] and all(r["state"] == "success" for r in runs)
        tests = runs[1]
        assert tests["startedBy"] == "Neovim"
        assert tests["upstreamRunIds"] == [lint["runId"]]
        # Every runUpdate of the chain, the final ones included, came before the response.
        assert rec.updates(tests["runId"])[-1] == {**tests, "previous": "running"}
        for run_id, upstream in ((lint["runId"], []), (tests["runId"], [lint["runId"]])):
            updates = rec.updates(run_id)
            assert [u["state"] for u in updates] == ["pending", "running", "success"]
            assert {(u["startedBy"], tuple(u["upstreamRunIds"])) for u in updates} == {
                ("Neovim", tuple(upstream))}

        # Without chain: just the run.
        plain = await request(client, "sidecar/wait", {"runId": lint["runId"]})
        assert plain == {"run": runs[0], "timedOut": False, "runs": []}

        # A save of this client: its runs are the client's too.
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=saved.as_uri())))

        def saved_chain() -> list[dict[str, Any]] | None:
            finals = [u for u in rec.of("sidecar/runUpdate")
                      if u["state"] in FINAL and u["triggerChain"][:1] == ["saved"]]
            return finals if len(finals) == 2 else None

        s_lint, s_tests = await rec.wait_for(saved_chain)
        assert [s_lint["command"], s_tests["command"]] == ["Lint", "Tests"]
        assert s_lint["startedBy"] == s_tests["startedBy"] == "Neovim"
        assert s_tests["upstreamRunIds"] == [s_lint["runId"]]

        # The lifecycle event's run is the host's.
        boot = await rec.final_of("Boot")
        assert (boot["startedBy"], boot["upstreamRunIds"]) == ("host", [])


@pytest.mark.timeout(30)
async def test_a_client_without_client_info_is_lsp(root: Path) -> None:
    write_config(root, CONFIG)
    async with start(root) as client:
        res = await request(client, "sidecar/run", {"command": "Lint", "wait": True})
        assert res["run"]["startedBy"] == "lsp"
