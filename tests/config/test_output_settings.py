"""``OUTPUT_LIMIT`` and ``OUTPUT_LINES``: how much output each task keeps (issue 19)."""

from __future__ import annotations

import pytest

from omniq_nb import ConfigError, Settings


def test_defaults_keep_one_megabyte_and_ten_thousand_lines() -> None:
    settings = Settings.from_env({})
    assert (settings.output_limit, settings.output_lines) == (1 << 20, 10_000)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1MB", 1 << 20), ("512KB", 512 << 10), ("512 kb", 512 << 10), ("2MiB", 2 << 20), ("1GB", 1 << 30),
     ("1048576", 1048576), ("100B", 100), ("0", 0)],
)  # fmt: skip
def test_output_limit_is_a_size(raw: str, expected: int) -> None:
    assert Settings.from_env({"OMNIQ_OUTPUT_LIMIT": raw}).output_limit == expected
    assert Settings().with_overrides(output_limit=raw).output_limit == expected


@pytest.mark.parametrize("raw", ["-1", "1.5MB", "MB", "", "1TB", "lots", "1 M B x"])
def test_a_bad_output_limit_says_what_it_takes(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"OMNIQ_OUTPUT_LIMIT=.*size in bytes such as 1048576, 512KB or 1MB"):
        Settings.from_env({"OMNIQ_OUTPUT_LIMIT": raw})


def test_output_lines_is_a_count_and_zero_keeps_none() -> None:
    assert Settings.from_env({"OMNIQ_OUTPUT_LINES": "50000"}).output_lines == 50_000
    assert Settings(output_lines=0).output_lines == 0
    with pytest.raises(ConfigError, match="OMNIQ_OUTPUT_LINES"):
        Settings.from_env({"OMNIQ_OUTPUT_LINES": "many"})
    with pytest.raises(ConfigError, match="output_limit="):
        Settings().with_overrides(output_limit=-5)
