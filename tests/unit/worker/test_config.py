"""Configuration: precedence, parsing, and one-line errors naming the problem."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from codetether_worker.cli import build_parser, parse_cli
from codetether_worker.config import (
    DEFAULT_CAPABILITIES,
    DEFAULT_REDIS_URL,
    OPTIONS,
    CodebaseSpec,
    ConfigError,
    find_agent_bin,
    load_config,
    merge_sources,
    parse_codebase_spec,
    read_config_file,
)


@pytest.fixture
def agent(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "my-agent"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def cli(*argv: str) -> dict[str, object]:
    return parse_cli(list(argv))


def test_defaults_match_the_seed(agent: str) -> None:
    config = load_config(cli("--server", "http://s:8000", "--agent-bin", agent), environ={})
    assert config.server_url == "http://s:8000"
    assert config.poll_interval == 5.0
    assert config.codebases == ()
    assert config.capabilities == DEFAULT_CAPABILITIES == ("agent", "build", "deploy")
    assert config.redis_url == DEFAULT_REDIS_URL == "redis://localhost:6379"
    assert config.session_sync_interval == 60.0
    assert config.heartbeat_interval == 15.0
    assert config.agent_bin == agent
    assert config.worker_name  # the hostname


def test_cli_beats_environment_beats_file_beats_default(tmp_path: Path, agent: str) -> None:
    file = tmp_path / "config.json"
    file.write_text(
        json.dumps(
            {
                "server_url": "http://from-file",
                "worker_name": "file-name",
                "poll_interval": 7,
                "max_concurrent_tasks": 3,
                "capabilities": ["agent", "test"],
            }
        )
    )
    environ = {"A2A_WORKER_NAME": "env-name", "A2A_POLL_INTERVAL": "2.5", "A2A_AGENT_BIN": agent}
    config = load_config(cli("--config", str(file), "--poll-interval", "1"), environ=environ)
    assert config.poll_interval == 1.0  # CLI
    assert config.worker_name == "env-name"  # environment over file
    assert config.server_url == "http://from-file"  # file over default
    assert config.max_concurrent_tasks == 3
    assert config.capabilities == ("agent", "test")
    assert config.task_timeout == 3600.0  # default
    assert config.config_file == file


def test_codebases_from_cli_are_checked_and_made_absolute(tmp_path: Path, agent: str) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "web").mkdir()
    config = load_config(
        cli(
            "--server",
            "http://s",
            "--agent-bin",
            agent,
            "--codebase",
            f"api:{tmp_path / 'api'}",
            "--codebase",
            f"web:{tmp_path / 'web'}",
            "--global-codebase",
            str(tmp_path),
        ),
        environ={},
    )
    assert [c.name for c in config.codebases] == ["api", "web"]
    assert config.codebases[0].path == str(tmp_path / "api")
    assert config.global_codebase == CodebaseSpec("global", str(tmp_path), "Global tasks")


def test_codebases_from_file_objects(tmp_path: Path, agent: str) -> None:
    (tmp_path / "p").mkdir()
    file = tmp_path / "c.json"
    file.write_text(
        json.dumps(
            {
                "server_url": "https://api.example",
                "codebases": [{"name": "my-project", "path": str(tmp_path / "p"), "description": "Main"}],
            }
        )
    )
    config = load_config(cli("--config", str(file), "--agent-bin", agent), environ={})
    assert config.codebases == (CodebaseSpec("my-project", str(tmp_path / "p"), "Main"),)


def test_environment_lists_are_comma_separated(tmp_path: Path, agent: str) -> None:
    (tmp_path / "a").mkdir()
    environ = {
        "A2A_SERVER_URL": "http://s",
        "A2A_AGENT_BIN": agent,
        "A2A_CAPABILITIES": "agent, gpu ,agent",
        "A2A_CODEBASES": f"a:{tmp_path / 'a'}",
        "A2A_REDIS_URL": "none",
        "A2A_AUTH_TOKEN": "secret",
    }
    config = load_config(cli(), environ=environ)
    assert config.capabilities == ("agent", "gpu")
    assert config.codebases[0].name == "a"
    assert config.redis_url is None
    assert config.auth_token == "secret"


@pytest.mark.parametrize(
    ("argv", "environ", "needle"),
    [
        ([], {}, "server_url is required"),
        (["--server", "ftp://x"], {}, "server_url (--server): must be an http:// or https:// URL"),
        (["--server", "http://s", "--codebase", "nocolon"], {}, "'nocolon' is not of the form name:path"),
        (["--server", "http://s", "--codebase", "x:/does/not/exist"], {}, "path /does/not/exist of codebase 'x' does not exist"),
        (["--server", "http://s", "--poll-interval", "0"], {}, "poll_interval (--poll-interval): must be > 0"),
        (["--server", "http://s", "--poll-interval", "soon"], {}, "poll_interval (--poll-interval): expected a number"),
        (["--server", "http://s"], {"A2A_MAX_CONCURRENT_TASKS": "0"}, "max_concurrent_tasks (A2A_MAX_CONCURRENT_TASKS): must be between 1 and 1000"),
        (["--server", "http://s", "--name", "has space"], {}, "worker_name (--name): 'has space' is not a valid worker id"),
        (["--server", "http://s", "--redis-url", "http://nope"], {}, "redis_url (--redis-url): must be a redis://"),
        (["--server", "http://s", "--agent-bin", "/no/such/agent"], {}, "agent_bin: /no/such/agent not found"),
        (["--server", "http://s", "--health-port", "70000"], {}, "health_port (--health-port): must be between 0 and 65535"),
    ],
)  # fmt: skip
def test_invalid_values_name_the_option(
    argv: list[str], environ: dict[str, str], needle: str, agent: str
) -> None:
    if "--agent-bin" not in argv:
        argv = [*argv, "--agent-bin", agent]
    with pytest.raises(ConfigError) as caught:
        load_config(cli(*argv), environ=environ)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"server_url": "http://s",\n  "poll_interval": }')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 2 column"):
        read_config_file(bad)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        read_config_file(listing)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot be read"):
            read_config_file(locked)


def test_wrong_types_in_the_file_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"poll_interval \(config file\): expected a number"):
        merge_sources({}, {}, {"poll_interval": "often"})
    with pytest.raises(ConfigError, match=r"max_concurrent_tasks \(config file\): expected an integer"):
        merge_sources({}, {}, {"max_concurrent_tasks": 2.5})
    with pytest.raises(ConfigError, match="capabilities"):
        merge_sources({}, {}, {"capabilities": [1]})
    with pytest.raises(ConfigError, match="needs a non-empty 'path'"):
        merge_sources({}, {}, {"codebases": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="given more than once"):
        merge_sources({}, {}, {"codebases": ["a:/x", "a:/y"]})


def test_unknown_file_keys_are_warnings_not_errors() -> None:
    values, warnings = merge_sources({}, {}, {"poll_interval": 3, "opencode_bin": "/x", "_comment": "hi"})
    assert values == {"poll_interval": 3.0}
    assert warnings == ["config file: unknown option 'opencode_bin' ignored"]


def test_parse_codebase_spec_keeps_colons_in_paths() -> None:
    assert parse_codebase_spec("codebases", "api:/srv/a:b") == CodebaseSpec("api", "/srv/a:b")


def test_agent_auto_detect(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    with pytest.raises(ConfigError, match="no agent found on PATH"):
        find_agent_bin(None, str(bin_dir))
    opencode = bin_dir / "opencode"
    opencode.write_text("#!/bin/sh\n")
    opencode.chmod(0o755)
    assert find_agent_bin(None, str(bin_dir)) == str(opencode)
    codetether = bin_dir / "codetether"
    codetether.write_text("#!/bin/sh\n")
    codetether.chmod(0o755)
    assert find_agent_bin(None, str(bin_dir)) == str(codetether)


def test_help_documents_every_option_with_env_and_default() -> None:
    text = " ".join(build_parser().format_help().split())
    for option in OPTIONS:
        assert option.flags[0] in text
        assert f"env {option.env}; default {option.default_text}" in " ".join(text.split())
    assert "A2A_AUTH_TOKEN" in text


def _run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codetether_worker", *argv],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--server", "http://s", "--codebase", "bad"],
        ["--server", "http://s", "--config", "/nonexistent/config.json"],
        ["--server", "http://s", "--no-such-flag"],
    ],
)
def test_the_process_exits_2_with_one_line(argv: list[str]) -> None:
    done = _run_cli(*argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("codetether-worker: error: ")


def test_docs_table_matches_the_options() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "worker.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in docs.splitlines() if line.startswith("| `")}
    for option in OPTIONS:
        row = rows.get(f"`{option.key}`")
        assert row is not None, f"docs/worker.md has no row for {option.key}"
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert cells[1] == f"`{option.env}`"
        assert cells[2] == ", ".join(f"`{flag}`" for flag in option.flags)
        assert cells[3] == option.default_text


def test_the_worker_imports_neither_kopf_nor_kubernetes_nor_the_server() -> None:
    code = (
        "import sys, codetether_worker.cli, codetether_worker.runtime, codetether_worker.demo;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kopf', 'kubernetes', 'fastapi', 'uvloop', "
        "'codetether_server', 'codetether_operator'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_example_agent_starts_light() -> None:
    code = "import sys, codetether_worker.example_agent; print(sorted(m for m in ('pydantic', 'httpx', 'redis') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
