"""Output capture: in memory, spilled to a file, bounded memory for huge outputs."""

from __future__ import annotations

import gc
import os
import threading

import psutil
import pytest
from corehelp import orch_of

from sidecar import CommandConfig, OutputStorageConfig, RunState
from sidecar.core.output import OutputCapture

pytestmark = pytest.mark.timeout(60)

GB = 1_000_000_000
MiB = 1 << 20


def test_small_output_stays_in_memory(tmp_path) -> None:
    cap = OutputCapture(spill_at=100)
    word = "w\u00f6rld".encode()
    for data, text in [(b"hello ", "hello "), (word[:2], "w"), (word[2:], "\u00f6rld")]:
        cap.feed(data)
        assert cap.decode(data) == text  # split UTF-8: nothing partial
    assert not cap.spilled
    assert cap.size == 12
    assert cap.read() == "hello w\u00f6rld".encode()
    assert cap.read(6, 1) == b"w"
    assert cap.read(100) == b""
    assert cap.text() == "hello w\u00f6rld"
    assert cap.tail(3) == "rld"
    assert cap.finish() == ""


def test_in_memory_output_written_on_finish(tmp_path) -> None:
    path = tmp_path / "cmd" / "run" / "output.txt"
    cap = OutputCapture(path)
    cap.feed(b"abc")
    assert not path.exists()
    cap.finish()
    assert path.read_bytes() == b"abc"


def test_spill_to_output_file(tmp_path) -> None:
    path = tmp_path / "run" / "output.log"
    cap = OutputCapture(path, spill_at=10, tail_bytes=4)
    cap.feed(b"0123456789")
    assert not cap.spilled
    cap.feed(b"abcdef")
    assert cap.spilled
    for _ in range(10):
        cap.feed(b"xyz")
    assert cap.size == 46
    assert cap.tail(4) == "zxyz"
    assert cap.read(8, 6) == b"89abcd"
    cap.finish()
    assert path.read_bytes() == b"0123456789abcdef" + b"xyz" * 10
    assert cap.text() == "0123456789abcdef" + "xyz" * 10


def test_spill_to_temp_file_leaves_nothing_on_disk(tmp_path) -> None:
    cap = OutputCapture(spill_dir=str(tmp_path), spill_at=4)
    cap.feed(b"12345678")
    assert cap.spilled
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing survives a crash
    cap.feed(b"9")
    cap.finish()
    assert cap.read() == b"123456789"
    assert cap.read(7, 5) == b"89"
    fd = cap._read_fd
    assert fd is not None and os.fstat(fd).st_size == 9
    del cap
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_incomplete_utf8_at_end_is_replaced() -> None:
    cap = OutputCapture()
    cap.feed(b"ok\xc3")
    assert cap.decode(b"ok\xc3") == "ok"
    assert cap.finish() == "\ufffd"


async def test_large_output_through_orchestrator_is_complete(tmp_path) -> None:
    # 3 MB: spills past 1 MiB; output/read_output/tail still see everything.
    orch = orch_of(CommandConfig(name="Big", command="sh -c 'yes abcdefgh | head -c 3000000'"))
    handle = await orch.run_command("Big")
    result = await handle.wait(20)
    assert result.state is RunState.SUCCESS
    assert result.capture is not None and result.capture.spilled
    assert orch.output_size(handle.run_id) == 3_000_000
    assert len(handle.output) == 3_000_000
    expected = (b"abcdefgh\n" * 333_334)[:3_000_000]
    assert handle.output.encode() == expected
    assert orch.tail(handle.run_id, 9) == expected[-9:].decode()
    assert orch.read_output(handle.run_id, 2_999_991, 100) == expected[2_999_991:]


# ------------------------------------------------------------------------------------------
# 1 GB of output, bounded memory
# ------------------------------------------------------------------------------------------


class _PeakRss:
    """Peak RSS of this process while running: resets the kernel's high-water mark
    (``/proc/self/clear_refs``) and also samples RSS from a thread."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.sampled_peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _hwm() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.sampled_peak = max(self.sampled_peak, self._proc.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        gc.collect()
        self.baseline = self._proc.memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_ok = True
        except OSError:
            self._hwm_ok = False
        self.sampled_peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hwm = self._hwm() if self._hwm_ok else None
        self.peak = max(self.sampled_peak, hwm or 0)
        self.growth = self.peak - self.baseline


@pytest.mark.timeout(120)
async def test_one_gigabyte_with_storage_bounded_memory(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="Big", command="head -c 1000000000 /dev/zero"),
                   storage=OutputStorageConfig(directory=str(out), keep_history=1))
    # Worst case for memory: a listener (forces decoding and publishing every chunk) and a
    # subscriber that never reads.
    seen = [0]
    orch.add_listener(lambda e: seen.__setitem__(0, seen[0] + getattr(e, "size", 0)))
    idle = orch.subscribe()
    with _PeakRss() as mem:
        handle = await orch.run_command("Big")
        result = await handle.wait(100)
    assert seen[0] == GB
    assert idle.dropped_chunks > 0
    assert handle.resolved_command.argv == ["head", "-c", "1000000000", "/dev/zero"]
    assert result.state is RunState.SUCCESS
    assert handle.output_file is not None
    assert os.path.getsize(handle.output_file) == GB
    assert orch.output_size(handle.run_id) == GB
    assert orch.read_output(handle.run_id, GB - 4) == b"\0" * 4
    print(f"1GB with storage: {result.duration_str}, RSS growth {mem.growth / MiB:.1f} MiB")  # noqa: T201
    os.unlink(handle.output_file)  # pytest keeps recent tmp_path dirs; do not keep 1 GB
    assert mem.growth < 64 * MiB


@pytest.mark.timeout(120)
async def test_one_gigabyte_without_storage_spills_to_temp_file(tmp_path) -> None:
    orch = orch_of(CommandConfig(name="Big", command="sh -c 'yes | head -c 1000000000'"))
    with _PeakRss() as mem:
        handle = await orch.run_command("Big")
        result = await handle.wait(100)
    assert handle.resolved_command.argv == ["sh", "-c", "yes | head -c 1000000000"]
    assert result.state is RunState.SUCCESS
    assert handle.output_file is None
    capture = result.capture
    assert capture is not None and capture.spilled
    assert os.fstat(capture._read_fd).st_size == GB
    assert orch.output_size(handle.run_id) == GB
    assert orch.read_output(handle.run_id, GB - 4) == b"y\ny\n"
    assert orch.tail(handle.run_id, 4) == "y\ny\n"
    print(f"1GB without storage: {result.duration_str}, RSS growth {mem.growth / MiB:.1f} MiB")  # noqa: T201
    assert mem.growth < 64 * MiB


def test_unwritable_output_file_falls_back_to_a_temp_file(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cap = OutputCapture(path=blocker / "run" / "output.txt", spill_dir=str(tmp_path), spill_at=4)
    cap.feed(b"12345678")
    cap.feed(b"9")
    cap.finish()
    assert cap.read() == b"123456789"
    assert cap.write_error is not None and "not-a-dir" in cap.write_error


def test_when_no_file_can_be_written_only_the_tail_is_kept(tmp_path) -> None:
    cap = OutputCapture(spill_dir=str(tmp_path / "missing"), spill_at=16, tail_bytes=16)
    for i in range(100):
        cap.feed(b"%02d-------\n" % i)  # 10 bytes each
    cap.finish()
    assert cap.size == 1000
    assert cap.write_error is not None and "truncated" in cap.write_error
    assert cap._chunks == [] and len(cap._tail) <= 32  # memory stays bounded
    assert cap.tail(10) == "99-------\n"
