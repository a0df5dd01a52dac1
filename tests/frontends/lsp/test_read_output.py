"""``sidecar/readOutput`` responses are bounded by their encoded size, whatever the output."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, py, write_config

from sidecar.app.protocol import json_size, wire_text

BAD_SIZE = 2 << 20
OVERHEAD = 512  # the response around `text`: ids, field names, numbers


def config() -> str:
    bad = py(f"import sys; sys.stdout.buffer.write(b'\\xff\\x01' * {BAD_SIZE // 2})")
    euro = py("import sys; sys.stdout.buffer.write('€'.encode() * 1000)")
    plain = py("import sys; sys.stdout.buffer.write(b'0123456789abcdef' * 64)")
    return "\n".join(f"[[command]]\nname = {json.dumps(name)}\ncommand = {json.dumps(cmd)}\n"
                     for name, cmd in (("Bad", bad), ("Euro", euro), ("Plain", plain)))


@pytest.mark.timeout(60)
async def test_read_output_is_bounded_by_its_encoded_size(root: Path) -> None:
    write_config(root, config())
    async with await RawClient.spawn() as raw:
        await raw.initialize(root, {"outputChunks": "none"})

        async def run(name: str) -> str:
            i = raw.send("sidecar/run", {"command": name, "wait": True})
            reply = await raw.response(i, timeout=30)
            assert reply["result"]["run"]["state"] == "success"
            run_id: str = reply["result"]["run"]["runId"]
            return run_id

        async def read(run_id: str, offset: int, length: int | None = None) -> dict[str, Any]:
            params: dict[str, Any] = {"runId": run_id, "offset": offset}
            if length is not None:
                params["length"] = length
            i = raw.send("sidecar/readOutput", params)
            reply = await raw.response(i, timeout=30)
            result: dict[str, Any] = reply["result"]
            assert raw.last_size <= 2 * (length or 4 << 20) + OVERHEAD
            return result

        bad = await run("Bad")
        expected = (b"\xff\x01" * (BAD_SIZE // 2)).decode("utf-8", "replace")
        # default length (4 MiB): 2 MiB of bytes that take 6 bytes of JSON each
        first = await read(bad, 0)
        assert first["totalSize"] == BAD_SIZE and first["final"] is True
        assert 0 < first["size"] < BAD_SIZE
        assert first["text"] == expected[:first["size"]]
        # the client continues at offset + size and gets everything
        length = 256 << 10
        offset, parts = 0, []
        while offset < BAD_SIZE:
            part = await read(bad, offset, length)
            assert part["offset"] == offset and 0 < part["size"] <= length
            parts.append(part["text"])
            offset += part["size"]
        assert offset == BAD_SIZE and "".join(parts) == expected

        # a character cut by the end of the slice is left for the next read
        euro = await run("Euro")
        part = await read(euro, 0, 4)
        assert (part["text"], part["size"]) == ("€", 3)
        part = await read(euro, 3, 3000)
        assert (part["text"], part["size"]) == ("€" * 999, 2997)
        # plain text reads as before: all that was asked
        plain = await run("Plain")
        part = await read(plain, 10, 100)
        assert part["size"] == 100
        assert part["text"] == (b"0123456789abcdef" * 64)[10:110].decode()


@pytest.mark.parametrize("seed", range(5))
def test_wire_text_bound_and_continuation(seed: int) -> None:
    """Reads at offset + size decode exactly like the whole output, each within the bound."""
    rng = random.Random(seed)
    atoms = [b"a", b"\n", b'"', b"\xff", b"\x01", "é".encode(), "€".encode(), "😀".encode(),
             b"\xe2\x82", b"\xf0\x9f"]
    for _ in range(300):
        data = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 80)))
        offset, parts = 0, []
        while offset < len(data):
            length = rng.randint(6, 24)
            piece = data[offset:offset + length]
            text, size = wire_text(piece, 2 * length, end=offset + len(piece) >= len(data))
            assert 0 < size <= len(piece)
            assert json_size(text) <= 2 * length
            assert len(json.dumps(text)) - 2 == json_size(text)
            parts.append(text)
            offset += size
        assert "".join(parts) == data.decode("utf-8", "replace")
    # tiny lengths still make progress (one character, maybe over the bound)
    assert wire_text(b"\x01\x01", 2, end=False) == ("\x01", 1)
    assert wire_text("€".encode()[:2], 2, end=False) == ("\ufffd", 2)
    assert wire_text(b"", 2, end=True) == ("", 0)
