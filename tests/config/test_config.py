from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from omniq_nb import AsyncOmniQ, ConfigError, OmniQ, Settings
from omniq_nb.storage import StorageError, open_storage

pytestmark = pytest.mark.anyio


@pytest.fixture
def restore_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("omniq_nb")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_defaults() -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.db_url == "sqlite:///.omniq/omniq.db"
    assert settings.default_queue == "default"
    assert settings.default_worker == "thread"
    assert settings.max_workers == 4
    assert settings.task_ttl is None
    assert settings.result_ttl == 7 * 86400.0
    assert settings.default_retries == 0
    assert settings.lease_seconds == 30.0
    assert settings.secret is None
    assert settings.autostart is True
    assert settings.events is True
    assert settings.log_level == "WARNING"


def test_reading_settings_creates_nothing(tmp_path: Path) -> None:
    Settings.from_env()
    assert list(tmp_path.iterdir()) == []


def test_yaml_from_cwd_is_read(tmp_path: Path) -> None:
    (tmp_path / "omniq.yaml").write_text("db_url: memory://\nmax_workers: 7\n")
    settings = Settings.from_env()
    assert (settings.db_url, settings.max_workers) == ("memory://", 7)


def test_omniq_config_names_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "omniq.yaml").write_text("max_workers: 7\n")
    other = tmp_path / "conf" / "other.yaml"
    other.parent.mkdir()
    other.write_text("max_workers: 9\ndefault_queue: gpu\n")
    monkeypatch.setenv("OMNIQ_CONFIG", str(other))
    settings = Settings.from_env()
    assert (settings.max_workers, settings.default_queue) == (9, "gpu")


def test_precedence_defaults_yaml_env_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "omniq.yaml").write_text(
        "max_workers: 5\ndefault_queue: from-yaml\nlease_seconds: 11\nretry_backoff: 3\n"
    )
    monkeypatch.setenv("OMNIQ_DEFAULT_QUEUE", "from-env")
    monkeypatch.setenv("OMNIQ_LEASE_SECONDS", "12")
    settings = Settings.from_env(lease_seconds=13)
    assert settings.max_workers == 5  # yaml beats default
    assert settings.retry_backoff == 3.0  # yaml beats default
    assert settings.default_queue == "from-env"  # env beats yaml
    assert settings.lease_seconds == 13.0  # code beats env
    assert settings.default_retries == 0  # default when nobody says


def test_async_omniq_applies_the_same_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "omniq.yaml").write_text("db_url: sqlite:///from-yaml.db\ndefault_queue: from-yaml\n")
    monkeypatch.setenv("OMNIQ_DEFAULT_QUEUE", "from-env")
    q = AsyncOmniQ(db_url="memory://")
    assert (q.settings.db_url, q.settings.default_queue) == ("memory://", "from-env")


def test_none_override_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_DEFAULT_QUEUE", "from-env")
    assert Settings.from_env(default_queue=None).default_queue == "from-env"


@pytest.mark.parametrize("key", ["db_url", "DB_URL", "OMNIQ_DB_URL"])
def test_yaml_keys_in_any_case(tmp_path: Path, key: str) -> None:
    (tmp_path / "omniq.yaml").write_text(f"{key}: memory://\n")
    assert Settings.from_env().db_url == "memory://"


def test_unknown_yaml_key_raises(tmp_path: Path) -> None:
    (tmp_path / "omniq.yaml").write_text("db_url: memory://\nmax_wrokers: 3\n")
    with pytest.raises(ConfigError, match="max_wrokers") as info:
        Settings.from_env()
    assert "max_workers" in str(info.value)  # lists the known settings


def test_missing_omniq_config_file_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("OMNIQ_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="OMNIQ_CONFIG") as info:
        Settings.from_env()
    assert str(missing) in str(info.value)


def test_yaml_that_is_not_a_mapping_raises(tmp_path: Path) -> None:
    (tmp_path / "omniq.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_invalid_yaml_value_names_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "omniq.yaml").write_text("max_workers: many\n")
    with pytest.raises(ConfigError, match=r"omniq\.yaml") as info:
        Settings.from_env()
    assert "max_workers" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("OMNIQ_LEASE_SECONDS", "30s", ["seconds >= 1", "30"]),
        ("OMNIQ_LEASE_SECONDS", "0.001", ["seconds >= 1", "runs twice"]),
        ("OMNIQ_POLL_INTERVAL", "1e-9", ["seconds >= 0.01", "idle worker"]),
        ("OMNIQ_RETRY_BACKOFF", "0", ["seconds > 0"]),
        ("OMNIQ_DEFAULT_WORKER", "gpu", ["async", "thread", "process"]),
        ("OMNIQ_MAX_WORKERS", "0", [">= 1"]),
        ("OMNIQ_EVENTS", "maybe", ["true", "false"]),
        ("OMNIQ_LOG_LEVEL", "loud", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
        ("OMNIQ_INTERRUPT", "stop", ["one of wait, cancel"]),
        ("OMNIQ_KEEPALIVE", "-5", ["seconds > 0", "0 or none"]),
        ("OMNIQ_KEEPALIVE", "often", ["seconds > 0", "0 or none"]),
    ],
)
def test_invalid_env_value_names_variable_and_accepted_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepted: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    message = str(info.value)
    assert variable in message
    assert repr(value) in message
    for word in accepted:
        assert word in message
    assert isinstance(info.value, ValueError)


def test_invalid_env_value_also_fails_async_omniq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "0")
    with pytest.raises(ConfigError, match="OMNIQ_MAX_WORKERS"):
        AsyncOmniQ(db_url="memory://")


def test_env_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_EVENTS", "off")
    monkeypatch.setenv("OMNIQ_AUTOSTART", "0")
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "debug")
    monkeypatch.setenv("OMNIQ_DEFAULT_WORKER", "Process")
    monkeypatch.setenv("OMNIQ_TASK_TTL", "none")
    monkeypatch.setenv("OMNIQ_RESULT_TTL", "3600")
    monkeypatch.setenv("OMNIQ_DEFAULT_RETRIES", "2")
    settings = Settings.from_env()
    assert settings.events is False
    assert settings.autostart is False
    assert settings.log_level == "DEBUG"
    assert settings.default_worker == "process"
    assert settings.task_ttl is None
    assert settings.result_ttl == 3600.0
    assert settings.default_retries == 2


@pytest.mark.parametrize(
    ("value", "expected"), [("60", 60.0), ("2.5", 2.5), ("0", None), ("0.0", None), ("none", None), ("Off", None)]
)
def test_keepalive_is_seconds_or_off(monkeypatch: pytest.MonkeyPatch, value: str, expected: float | None) -> None:
    assert Settings().keepalive == 60.0
    monkeypatch.setenv("OMNIQ_KEEPALIVE", value)
    assert Settings.from_env().keepalive == expected
    assert Settings().with_overrides(keepalive=0).keepalive is None


def test_interrupt_is_layered_like_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().interrupt == "wait"
    (tmp_path / "omniq.yaml").write_text("interrupt: cancel\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env().interrupt == "cancel"
    monkeypatch.setenv("OMNIQ_INTERRUPT", "WAIT")
    assert Settings.from_env().interrupt == "wait"
    assert Settings.from_env(interrupt="cancel").interrupt == "cancel"


def test_code_override_accepts_timedelta_and_validates() -> None:
    assert Settings.from_env(lease_seconds=timedelta(minutes=1)).lease_seconds == 60.0
    with pytest.raises(ConfigError, match="lease_seconds"):
        Settings.from_env(lease_seconds=-1)


def test_unknown_override_raises_type_error() -> None:
    with pytest.raises(TypeError, match="lease_secs") as info:
        Settings.from_env(lease_secs=3)
    assert "lease_seconds" in str(info.value)
    with pytest.raises(TypeError, match="lease_secs"):
        AsyncOmniQ(db_url="memory://", lease_secs=3)
    with pytest.raises(TypeError, match="lease_secs"):
        Settings().with_overrides(lease_secs=3)


def test_repr_hides_secret_and_url_password() -> None:
    settings = Settings.from_env(db_url="postgresql://me:hunter2@db:5432/q", secret="s3cr3t-key")
    text = repr(settings)
    assert "hunter2" not in text
    assert "s3cr3t-key" not in text
    assert "postgresql://me:***@db:5432/q" in text
    assert "secret='***'" in text


def test_invalid_secret_message_hides_it() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(secret=12345)
    assert "12345" not in str(info.value)


def test_log_level_sets_package_logger_level(monkeypatch: pytest.MonkeyPatch, restore_logger: logging.Logger) -> None:
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "DEBUG")
    AsyncOmniQ(db_url="memory://")
    assert restore_logger.level == logging.DEBUG
    AsyncOmniQ(db_url="memory://", log_level="error")
    assert restore_logger.level == logging.ERROR
    assert restore_logger.handlers == []  # the library adds no handler


@pytest.mark.parametrize("url", ["sqlite:///a\x00b.db", "sqlite:///a%00b.db", "memory://\x00"])
def test_a_nul_byte_in_the_store_url_is_a_config_error(url: str) -> None:
    for make in (lambda: Settings.from_env(db_url=url), lambda: AsyncOmniQ(db_url=url), lambda: OmniQ(db_url=url)):
        with pytest.raises(ConfigError, match="NUL byte") as info:
            make()
        assert "OMNIQ_DB_URL" in str(info.value)
    with pytest.raises(ConfigError, match=r"OMNIQ_DB_URL=.*NUL byte"):
        Settings.from_env({"OMNIQ_DB_URL": url})  # os.environ itself cannot hold a NUL byte


def test_a_nul_byte_reaching_open_storage_is_a_storage_error() -> None:
    for url in ("sqlite:///a\x00b.db", "sqlite:///a%00b.db"):
        with pytest.raises(StorageError, match="NUL byte"):
            open_storage(url)
        with pytest.raises(StorageError, match="NUL byte"):
            AsyncOmniQ(settings=Settings(db_url=url))


def test_an_invalid_store_url_message_hides_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(db_url="postgresql://me:hunter2@db/q\x00")
    assert "hunter2" not in str(info.value)
    assert "me:***@db" in str(info.value)


def test_harmful_values_are_refused_from_code_yaml_and_env(tmp_path: Path) -> None:
    for name, value, minimum in (("lease_seconds", 0.5, ">= 1"), ("poll_interval", 1e-9, ">= 0.01")):
        with pytest.raises(ConfigError, match=minimum):
            Settings.from_env(**{name: value})
        with pytest.raises(ConfigError, match=minimum):
            Settings().with_overrides(**{name: value})
        with pytest.raises(ConfigError, match=minimum):
            AsyncOmniQ(db_url="memory://", **{name: value})
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"{name}: {value}\n")
        with pytest.raises(ConfigError, match=minimum):
            Settings.from_env({}, config_file=config)
    lowest = Settings.from_env(lease_seconds=1, poll_interval=0.01)
    assert (lowest.lease_seconds, lowest.poll_interval) == (1.0, 0.01)


def test_an_empty_secret_is_refused_from_code_yaml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "secret.yaml"
    config.write_text('secret: ""\n')
    attempts = (
        lambda: Settings.from_env({"OMNIQ_SECRET": ""}),
        lambda: Settings.from_env({"OMNIQ_SECRET": "  "}),
        lambda: Settings.from_env({}, config_file=config),
        lambda: Settings.from_env(secret=""),
        lambda: AsyncOmniQ(db_url="memory://", secret=""),
    )
    for attempt in attempts:
        with pytest.raises(ConfigError, match="empty key turns signing off") as info:
            attempt()
        assert "SECRET" in str(info.value).upper()
    config.write_text("secret:\n")  # null: not set, as if the key were absent
    assert Settings.from_env({}, config_file=config).secret is None


@pytest.mark.parametrize("content", [b"\x80", b"max_workers: [1\n", b"[" * 2000, b"0: 0000-00-00"])
def test_an_unreadable_yaml_file_is_a_one_line_config_error(tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigError, match="cannot read settings from") as info:
        Settings.from_env({}, config_file=config)
    assert len(str(info.value).splitlines()) == 1
