"""Settings from the environment, and the command line that documents them."""

from __future__ import annotations

import pytest

from codetether_server.__main__ import build_parser, settings_from
from codetether_server.settings import SETTINGS, Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.storage) == ("0.0.0.0", 8000, "memory")
    assert (settings.lease_seconds, settings.max_attempts, settings.lease_sweep_interval) == (60, 3, 5)
    assert (settings.worker_offline_seconds, settings.redis_prefix, settings.auth_tokens) == (
        90,
        "codetether",
        (),
    )
    assert settings.task_retention_seconds == 7 * 24 * 3600


@pytest.mark.parametrize(
    ("env", "storage"),
    [
        ({"DATABASE_URL": "postgresql://db/x", "A2A_REDIS_URL": "redis://r"}, "postgres"),
        ({"A2A_REDIS_URL": "redis://r"}, "redis"),
        ({"A2A_REDIS_URL": "redis://r", "A2A_STORAGE": "memory"}, "memory"),
        ({}, "memory"),
    ],
)
def test_storage_is_chosen_automatically(env: dict[str, str], storage: str) -> None:
    assert Settings.from_env(env).storage == storage


def test_tokens_are_split_and_trimmed() -> None:
    assert Settings.from_env({"A2A_AUTH_TOKENS": " a, b ,,"}).auth_tokens == ("a", "b")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"A2A_PORT": "eighty"}, "A2A_PORT"),
        ({"A2A_LEASE_SECONDS": "0"}, "A2A_LEASE_SECONDS"),
        ({"A2A_TASK_RETENTION_SECONDS": "-1"}, "A2A_TASK_RETENTION_SECONDS"),
        ({"A2A_STORAGE": "sqlite"}, "A2A_STORAGE"),
        ({"A2A_STORAGE": "postgres"}, "DATABASE_URL"),
        ({"A2A_STORAGE": "redis"}, "A2A_REDIS_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_every_setting_has_a_flag_that_names_its_variable() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for spec in SETTINGS:
        assert f"--{spec.field.replace('_', '-')}" in help_text
        assert spec.env in help_text
    assert set(Settings.model_fields) == {spec.field for spec in SETTINGS}


def test_flags_win_over_the_environment() -> None:
    args = build_parser().parse_args(["--port", "9001", "--lease-seconds", "5"])
    settings = settings_from(args, {"A2A_PORT": "8001", "A2A_MAX_ATTEMPTS": "7"})
    assert (settings.port, settings.lease_seconds, settings.max_attempts) == (9001, 5, 7)


def test_the_docs_table_lists_every_setting_with_its_default() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[3] / "docs" / "server.md").read_text()
    for spec in SETTINGS:
        default = f"`{spec.default}`" if spec.default else "(empty)"
        row = f"| `{spec.env}` | `--{spec.field.replace('_', '-')}` | {default} | {spec.help} |"
        assert row in docs, row
