"""Range and enum rules on config values: the dataclasses and the file validator agree."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar import CommandConfig, ConfigValidationError, OutputStorageConfig
from sidecar.core.config import validate_data

BAD_COMMAND_VALUES: list[tuple[str, Any]] = [
    ("name", "   "),
    ("command", ""),
    ("max_concurrent", -1),
    ("timeout_secs", 0),
    ("on_retrigger", "restart"),
    ("debounce_mode", "end"),
    ("debounce_in_ms", -5),
    ("keep_in_memory", -2),
    ("keep_history", -3),
    ("output_extension", "txt"),
    ("output_extension", "./x"),
]
BAD_STORAGE_VALUES: list[tuple[str, Any]] = [
    ("keep_history", -2),
    ("output_extension", "log"),
    ("output_extension", ".a\\b"),
]


def _invalid_values(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    parsed = validate_data(data, "cmdorc.toml", None)
    assert {p.code for p in parsed.problems} <= {"invalid-value"}, parsed.problems
    return [(p.path, p.message) for p in parsed.problems]


@pytest.mark.parametrize(("key", "value"), BAD_COMMAND_VALUES)
def test_command_rule_same_message_in_dataclass_and_file(key: str, value: Any) -> None:
    table = {"name": "A", "command": "true", key: value}
    with pytest.raises(ConfigValidationError) as info:
        CommandConfig(**table)
    assert _invalid_values({"command": [table]}) == [(("command", 0, key), str(info.value))]


@pytest.mark.parametrize(("key", "value"), BAD_STORAGE_VALUES)
def test_storage_rule_same_message_in_dataclass_and_file(key: str, value: Any) -> None:
    with pytest.raises(ConfigValidationError) as info:
        OutputStorageConfig(**{key: value})
    assert _invalid_values({"output_storage": {key: value}}) == [
        (("output_storage", key), str(info.value))]


def test_file_reports_every_broken_rule_dataclass_raises_the_first() -> None:
    table = {"name": "A", "command": "true", "max_concurrent": -1, "debounce_in_ms": -1,
             "keep_history": -9}
    problems = _invalid_values({"command": [{"name": "ok", "command": "true"}, table]})
    assert [path for path, _ in problems] == [
        ("command", 1, "max_concurrent"), ("command", 1, "debounce_in_ms"),
        ("command", 1, "keep_history")]
    with pytest.raises(ConfigValidationError) as info:
        CommandConfig(**table)
    assert str(info.value) == problems[0][1]


@pytest.mark.parametrize("blank", ["", " \t", None])
def test_name_and_command_cannot_be_blank(blank: Any) -> None:
    with pytest.raises(ConfigValidationError, match="name cannot be empty"):
        CommandConfig(name=blank, command="true")
    with pytest.raises(ConfigValidationError, match="cannot be empty"):
        CommandConfig(name="A", command=blank)


def test_unset_optional_values_and_good_values_pass() -> None:
    cmd = CommandConfig(name="A", command="true", max_concurrent=0, timeout_secs=None,
                        keep_in_memory=-1, keep_history=None, output_extension=None,
                        on_retrigger="ignore", debounce_mode="completion")
    assert cmd.max_concurrent == 0
    assert OutputStorageConfig(keep_history=-1, output_extension=".log").is_enabled
    assert _invalid_values({"command": [{"name": "A", "command": "true", "timeout_secs": 1,
                                         "keep_history": 0, "output_extension": ".md"}],
                            "output_storage": {"keep_history": 5}}) == []
