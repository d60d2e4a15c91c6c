"""Fuzzing of the public parsers: any input gives a value or one of the library's own errors.

Store URLs, cron expressions, durations, settings (env and YAML) end in a value or an
``OmniQError`` (``ConfigError``, ``StorageError``); magic lines end in a value or IPython's
``UsageError`` (the one-line error a magic shows), never in another exception type.
"""

from __future__ import annotations

import contextlib
import shlex
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from omniq_nb import OmniQError, Settings
from omniq_nb.notebook.magics import OmniQMagics
from omniq_nb.options import make_options
from omniq_nb.schedule import duration, make_schedule, seconds
from omniq_nb.storage import open_storage, redact_url

FUZZ = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCHEMES = ["sqlite", "memory", "postgresql", "postgres", "redis", "rediss", "nats", "file", "unix", "SQLite", ""]
URL_CHARS = st.text(alphabet=string.printable + "\x00é/:@%?#[]", max_size=40)
urls = st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(SCHEMES), URL_CHARS),
    st.builds(lambda scheme, rest: f"{scheme}:///{rest}", st.sampled_from(SCHEMES), URL_CHARS),
)
CRON_FIELD = st.text(alphabet="0123456789*/,-LW#?HJANFEBMONSUT", min_size=1, max_size=6)
crons = st.one_of(
    st.text(max_size=30),
    st.lists(CRON_FIELD, min_size=1, max_size=7).map(" ".join),
    st.sampled_from(["@daily", "@hourly", "@reboot", "@yearly", "@every 5m"]),
)
durations = st.one_of(
    st.text(max_size=12),
    st.builds(
        lambda n, unit: f"{n}{unit}", st.from_regex(r"\d{1,400}(\.\d{1,5})?", fullmatch=True), st.sampled_from("smhdw ")
    ),
)
SETTING_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ENQUEUE_FLAGS = [
    "--as", "--retries", "--timeout", "--queue", "--priority", "--kind", "--delay", "--ttl", "--result-ttl",
    "--interval", "--cron", "--at-most-once", "--name", "--", "-n", "thread", "0", "-1", "nan", "inf", "1e999",
    "15m", "0 0 31 2 *", "*/5 * * * *", "",
]  # fmt: skip
magic_lines = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(ENQUEUE_FLAGS), st.text(max_size=10)), max_size=8).map(shlex.join),
)


@FUZZ
@given(url=urls)
@example(url="sqlite:///a\x00b.db")
@example(url="postgresql://me:pw@db:99999/q")
@example(url="redis://[::1/0")
def test_store_urls_give_a_store_or_an_omniq_error(url: str) -> None:
    redact_url(url)  # used in every message about a URL: it never raises
    with contextlib.suppress(OmniQError):
        Settings.from_env({}, db_url=url)
    with contextlib.suppress(OmniQError):
        open_storage(url)  # only built, never opened: nothing is created on disk


@FUZZ
@given(cron=crons)
@example(cron="0 0 31 2 *")
@example(cron="0 0 1 1 * 0 2020")
def test_cron_expressions_give_a_schedule_or_an_omniq_error(cron: str) -> None:
    with contextlib.suppress(OmniQError):
        make_schedule(cron=cron)


@FUZZ
@given(text=durations)
@example(text="9" * 400)
def test_durations_give_finite_seconds_or_an_omniq_error(text: str) -> None:
    try:
        value = duration(text)
    except OmniQError:
        return
    assert seconds(value, name="duration") == value  # finite and >= 0


@FUZZ
@given(key=st.sampled_from(Settings.__struct_fields__), value=st.text(max_size=30))
def test_environment_values_give_settings_or_an_omniq_error(key: str, value: str) -> None:
    with contextlib.suppress(OmniQError):
        Settings.from_env({f"OMNIQ_{key.upper()}": value.replace("\x00", "")})  # env cannot hold NUL


@FUZZ
@given(
    content=st.one_of(
        st.text(max_size=80),
        st.binary(max_size=40),
        st.dictionaries(
            st.one_of(st.sampled_from(Settings.__struct_fields__), st.text(max_size=8)), SETTING_VALUES, max_size=4
        ).map(yaml.safe_dump),
    )
)
@example(content=b"\x80")  # not UTF-8
@example(content="0: 0000-00-00")  # a date YAML reads but Python cannot hold
@example(content="max_workers: .inf")  # int() of an infinite float overflows
@example(content="lease_seconds: 1" + "0" * 400)  # float() of a huge int overflows
@example(content="[" * 2000)  # nested past the recursion limit
@example(content="!!python/object:os.system x")  # safe_load refuses it
def test_yaml_config_gives_settings_or_an_omniq_error(content: str | bytes, tmp_path: Path) -> None:
    config = tmp_path / "omniq.yaml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(OmniQError):
        Settings.from_env({}, config_file=config)


class _FakeQueue:
    """Validates what a magic passes on, as the real queue would, and stores nothing."""

    def enqueue_call(self, fn: Any, /, *, args: Any = (), **options: Any) -> str:
        make_options(**options)
        return "handle"

    def purge_report(self, *, older_than: float | None = None, command: str = "purge", **_: Any) -> str:
        seconds(older_than, name="older_than")
        return "purged 0 finished tasks"

    def list(self, **_: Any) -> list[Any]:
        return []


@pytest.fixture
def magics() -> OmniQMagics:
    shell = SimpleNamespace(user_ns={"data": [1, 2]}, execution_count=1, configurables=[])
    return OmniQMagics(shell, SimpleNamespace(queue=_FakeQueue()))  # type: ignore[arg-type]


@FUZZ
@given(command=st.sampled_from(["enqueue", "purge", "list"]), rest=magic_lines)
@example(command="enqueue", rest="--cron '0 0 31 2 *'")
@example(command="enqueue", rest="--timeout nan")
@example(command="purge", rest="--older-than 1e999")
def test_magic_lines_give_a_value_or_a_usage_error(magics: OmniQMagics, command: str, rest: str) -> None:
    cell = "total = sum(data)\ntotal" if command == "enqueue" else None
    with contextlib.suppress(UsageError):
        magics.omniq(f"{command} {rest}", cell)


def test_a_cron_that_never_matches_is_a_usage_error_naming_it(magics: OmniQMagics) -> None:
    with pytest.raises(UsageError, match=r"cron='0 0 31 2 \*' matches no time"):
        magics.omniq("enqueue --cron '0 0 31 2 *'", "1")
    assert magics.omniq("enqueue --cron '*/5 * * * *'", "1") == "handle"


def test_enqueue_durations_take_the_command_line_forms(magics: OmniQMagics) -> None:
    assert magics.omniq("enqueue --timeout 15m --delay 90s --ttl 12h --result-ttl 7d", "1") == "handle"
    assert magics.omniq("enqueue --interval 1.5h", "1") == "handle"
    with pytest.raises(UsageError, match=r"--delay: invalid duration value: 'soon'"):
        magics.omniq("enqueue --delay soon", "1")
