"""The files :class:`~sidecar.core.ports.RunStore`: output storage on disk.

``{directory}/{command}/{run_id}/metadata.toml`` + ``output{ext}``, retention (``keep_history``:
0 off, -1 unlimited, N newest kept) and reloading history."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

from sidecar.core.config import CommandConfig, OutputStorageConfig
from sidecar.core.runs import ResolvedCommand, RunResult, RunState

logger = logging.getLogger("sidecar.store")
METADATA = "metadata.toml"
# Keys of RunResult.to_dict() the top table of metadata.toml leaves out: derived, known from
# the file's place, or written in [resolved_command].
_NOT_IN_METADATA_TABLE = ("duration_str", "metadata_file", "resolved_command", "cwd")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escaping is valid TOML basic-string escaping for what we write.
    return json.dumps(str(value), ensure_ascii=False)


def _toml_table(values: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in values.items()
                   if v is not None)


class OutputFilesStore:
    """Resolves per-command settings and reads/writes run directories."""

    def __init__(self, settings: OutputStorageConfig) -> None:
        self.configure(settings)

    def configure(self, settings: OutputStorageConfig) -> None:
        self.settings = settings
        self.root = Path(settings.directory)

    def keep_history(self, cmd: CommandConfig) -> int:
        return cmd.keep_history if cmd.keep_history is not None else self.settings.keep_history

    def extension(self, cmd: CommandConfig) -> str:
        return cmd.output_extension or self.settings.output_extension

    def enabled(self, cmd: CommandConfig) -> bool:
        return self.keep_history(cmd) != 0

    def run_dir(self, command: str, run_id: str) -> Path:
        return self.root / _safe(command) / run_id

    def paths(self, cmd: CommandConfig, run_id: str) -> tuple[Path, Path]:
        d = self.run_dir(cmd.name, run_id)
        return d / f"output{self.extension(cmd)}", d / METADATA

    def write_metadata(self, result: RunResult) -> None:
        """Write the run's ``metadata.toml``. An output file kept elsewhere (the run
        records') is linked into the run directory (copied across file systems)."""
        assert result.metadata_file is not None
        rc = result.resolved_command
        top = result.to_dict()
        for key in _NOT_IN_METADATA_TABLE:
            del top[key]
        output = result.output_file
        if output is not None and output.parent != result.metadata_file.parent:
            ext = rc.output_extension if rc and rc.output_extension else \
                self.settings.output_extension
            output = _export(output, result.metadata_file.parent / f"output{ext}")
        top["output_file"] = output.name if output else None
        text = _toml_table(top)
        if rc is not None:
            text += "\n[resolved_command]\n" + _toml_table({
                "command": rc.command, "cwd": rc.cwd, "timeout_secs": rc.timeout_secs})
            text += "\n[resolved_command.vars]\n" + _toml_table(rc.vars)
        result.metadata_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = result.metadata_file.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(result.metadata_file)

    def enforce_retention(self, cmd: CommandConfig) -> None:
        keep = self.keep_history(cmd)
        if keep <= 0:
            return
        runs = self._run_dirs(cmd.name)
        for old in runs[:-keep] if len(runs) > keep else []:
            try:
                shutil.rmtree(old)
            except OSError as exc:
                logger.warning("could not delete %s: %s", old, exc)

    def _run_dirs(self, command: str) -> list[Path]:
        """Finished run directories (with metadata), oldest first."""
        base = self.root / _safe(command)
        try:
            dirs = [d for d in base.iterdir() if (d / METADATA).is_file()]
        except OSError:
            return []
        return sorted(dirs, key=lambda d: (d / METADATA).stat().st_mtime)

    def load_history(self, cmd: CommandConfig, limit: int) -> list[RunResult]:
        """Up to ``limit`` (-1: all) most recent runs from disk, oldest first."""
        dirs = self._run_dirs(cmd.name)
        if limit >= 0:
            dirs = dirs[-limit:] if limit else []
        out: list[RunResult] = []
        for d in dirs:
            try:
                out.append(_load_run(d))
            except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
                logger.warning("skipping unreadable run directory %s: %s", d, exc)
        return out


def _export(source: Path, target: Path) -> Path:
    """``target`` made the same file as ``source`` (a hard link, else a copy; an empty file
    when there is no output)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except FileNotFoundError:
        target.write_bytes(b"")
    except OSError:
        shutil.copyfile(source, target)
    return target


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in name) or "_"


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _load_run(d: Path) -> RunResult:
    meta = tomllib.loads((d / METADATA).read_text(encoding="utf-8"))
    rc_meta = meta.get("resolved_command")
    rc = None
    if isinstance(rc_meta, dict):
        rc = ResolvedCommand(command=rc_meta.get("command", ""), cwd=rc_meta.get("cwd"), env={},
                             timeout_secs=rc_meta.get("timeout_secs"),
                             vars=dict(rc_meta.get("vars", {})))
    start, end = _time(meta.get("start_time")), _time(meta.get("end_time"))
    out_name = meta.get("output_file")
    return RunResult(
        command_name=meta["command_name"],
        run_id=meta["run_id"],
        trigger_event=meta.get("trigger_event"),
        trigger_chain=list(meta.get("trigger_chain", [])),
        success=meta.get("success"),
        error=meta.get("error"),
        state=RunState(meta["state"]),
        start_time=start,
        end_time=end,
        duration=(end - start) if start and end else None,
        resolved_command=rc,
        metadata_file=d / METADATA,
        output_file=d / out_name if out_name else None,
        comment=meta.get("comment", ""),
        exit_code=meta.get("exit_code"),
        started_by=meta.get("started_by"),
    )
