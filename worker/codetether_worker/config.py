"""Worker configuration: the seed's options plus ours, from four sources.

Precedence: command-line flag > ``A2A_*`` environment variable > JSON config file > default.
The option table below drives the CLI, the environment, the config file and ``--help``, so the three
can never disagree. Every problem raises ``ConfigError`` with one line naming the option.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetether_contract.events import DEFAULT_PREFIX
from codetether_contract.models import is_valid_id
from codetether_worker.storage_layout import default_agent_storage

DEFAULT_CONFIG_FILE = Path("/etc/a2a-worker/config.json")
DEFAULT_CAPABILITIES = ("agent", "build", "deploy")
DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_HEALTH_PORT = 8081
AGENT_CANDIDATES = ("codetether", "opencode")
"""Looked up on PATH, in this order, when ``agent_bin`` is not set."""

REDIS_DISABLED_WORDS = frozenset({"", "none", "off", "false", "disabled"})
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """Invalid configuration; the message is one line naming the problem."""


@dataclass(frozen=True)
class CodebaseSpec:
    name: str
    path: str
    description: str = ""


@dataclass(frozen=True)
class WorkerConfig:
    server_url: str
    worker_name: str
    agent_bin: str
    poll_interval: float = 5.0
    codebases: tuple[CodebaseSpec, ...] = ()
    global_codebase: CodebaseSpec | None = None
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    redis_url: str | None = DEFAULT_REDIS_URL
    redis_prefix: str = DEFAULT_PREFIX
    max_concurrent_tasks: int = 1
    task_timeout: float = 3600.0
    session_sync_interval: float = 60.0
    heartbeat_interval: float = 15.0
    drain_timeout: float = 25.0
    health_port: int = DEFAULT_HEALTH_PORT
    health_host: str = "0.0.0.0"
    agent_storage: Path = field(default_factory=default_agent_storage)
    auth_token: str | None = None
    log_level: str = "info"
    config_file: Path | None = None
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- value parsers
# Each takes the option key and a raw value: a string (CLI, environment) or a JSON value (file).


def _text(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{key}: expected a string, got {json.dumps(raw)}")
    return raw.strip()


def _number(key: str, raw: Any, *, minimum: float, allow_equal: bool) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{key}: expected a number, got {json.dumps(raw)}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{key}: expected a finite number, got {raw!r}")
    if value < minimum or (value == minimum and not allow_equal):
        bound = f">= {minimum:g}" if allow_equal else f"> {minimum:g}"
        raise ConfigError(f"{key}: must be {bound}, got {raw!r}")
    return value


def _positive(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0, allow_equal=False)


def _non_negative(key: str, raw: Any) -> float:
    return _number(key, raw, minimum=0, allow_equal=True)


def _integer(key: str, raw: Any, low: int, high: int) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ConfigError(f"{key}: expected an integer, got {json.dumps(raw)}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
    return value


def _concurrency(key: str, raw: Any) -> int:
    return _integer(key, raw, 1, 1000)


def _port(key: str, raw: Any) -> int:
    return _integer(key, raw, 0, 65535)


def _server_url(key: str, raw: Any) -> str:
    url = _text(key, raw).rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ConfigError(f"{key}: must be an http:// or https:// URL, got {raw!r}")
    return url


def _worker_name(key: str, raw: Any) -> str:
    name = _text(key, raw)
    if not is_valid_id(name):
        raise ConfigError(
            f"{key}: {name!r} is not a valid worker id (letters, digits, '.', '_', '-'; starts with a letter or digit)"
        )
    return name


def _redis_url(key: str, raw: Any) -> str | None:
    if raw is None:
        return None
    url = _text(key, raw)
    if url.lower() in REDIS_DISABLED_WORDS:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{key}: must be a redis://, rediss:// or unix:// URL (or 'none'), got {raw!r}")
    return url


def _redis_prefix(key: str, raw: Any) -> str:
    prefix = _text(key, raw)
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"{key}: must be a non-empty word without spaces, got {raw!r}")
    return prefix


def _capabilities(key: str, raw: Any) -> tuple[str, ...]:
    items: list[Any]
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ConfigError(f"{key}: expected a list of strings or a comma-separated string")
    caps: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{key}: every capability must be a non-empty string, got {item!r}")
        if item.strip() not in caps:
            caps.append(item.strip())
    return tuple(caps)


def parse_codebase_spec(key: str, raw: Any) -> CodebaseSpec:
    """``name:path`` (CLI, environment) or ``{"name", "path", "description"}`` (config file)."""
    if isinstance(raw, str):
        name, sep, path = raw.partition(":")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{key}: {raw!r} is not of the form name:path")
        return CodebaseSpec(name=name.strip(), path=path.strip())
    if isinstance(raw, dict):
        raw_name, raw_path, description = raw.get("name"), raw.get("path"), raw.get("description", "")
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise ConfigError(f"{key}: every codebase needs a non-empty 'name', got {json.dumps(raw)}")
        if not isinstance(raw_path, str) or not raw_path.strip():
            raise ConfigError(f"{key}: codebase {raw_name!r} needs a non-empty 'path'")
        if not isinstance(description, str):
            raise ConfigError(f"{key}: codebase {raw_name!r}: 'description' must be a string")
        return CodebaseSpec(name=raw_name.strip(), path=raw_path.strip(), description=description)
    raise ConfigError(f"{key}: expected name:path or an object with name and path, got {json.dumps(raw)}")


def _codebases(key: str, raw: Any) -> tuple[CodebaseSpec, ...]:
    if isinstance(raw, str):
        items: list[Any] = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ConfigError(f"{key}: expected a list of codebases")
    specs = tuple(parse_codebase_spec(key, item) for item in items)
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{key}: codebase name {duplicates[0]!r} is given more than once")
    return specs


def _global_codebase(key: str, raw: Any) -> CodebaseSpec | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        return CodebaseSpec(name="global", path=raw.strip(), description="Global tasks")
    if isinstance(raw, dict):
        spec = parse_codebase_spec(key, {"name": "global", "description": "Global tasks", **raw})
        return spec
    raise ConfigError(f"{key}: expected a path or an object with a path")


def _log_level(key: str, raw: Any) -> str:
    level = _text(key, raw).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{key}: must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _path(key: str, raw: Any) -> Path:
    text = _text(key, raw)
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    return Path(text).expanduser()


# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Option:
    key: str
    env: str
    flags: tuple[str, ...]
    default_text: str
    help: str
    parse: Callable[[str, Any], Any]
    metavar: str = "VALUE"
    repeatable: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("server_url", "A2A_SERVER_URL", ("--server", "--server-url"), "(required)",
           "CodeTether server URL", _server_url, "URL"),
    Option("worker_name", "A2A_WORKER_NAME", ("--name", "--worker-name"), "hostname",
           "Unique worker identifier (in a pod: the pod name)", _worker_name, "NAME"),
    Option("poll_interval", "A2A_POLL_INTERVAL", ("--poll-interval",), "5",
           "Seconds between task polls (the fallback when reactive mode is unavailable)", _positive, "SECONDS"),
    Option("codebases", "A2A_CODEBASES", ("--codebase",), "[]",
           "Codebase to register, name:path; repeat the flag for more (environment: comma-separated)",
           _codebases, "NAME:PATH", repeatable=True),
    Option("global_codebase", "A2A_GLOBAL_CODEBASE", ("--global-codebase",), "none",
           "Folder of this worker's global codebase; the worker then also runs tasks with codebase_id \"global\"",
           _global_codebase, "PATH"),
    Option("agent_bin", "A2A_AGENT_BIN", ("--agent-bin",), "auto-detect",
           "Agent program run as '<agent_bin> run --agent TYPE --format json ... -- PROMPT' "
           "(auto-detect: codetether, then opencode, on PATH)", _text, "PATH"),
    Option("capabilities", "A2A_CAPABILITIES", ("--capabilities",), "agent,build,deploy",
           "Advertised capabilities, comma-separated", _capabilities, "LIST"),
    Option("redis_url", "A2A_REDIS_URL", ("--redis-url",), DEFAULT_REDIS_URL,
           "Redis for reactive task delivery; 'none' disables it. While Redis is unreachable the worker "
           "polls and reconnects in the background", _redis_url, "URL"),
    Option("redis_prefix", "A2A_REDIS_PREFIX", ("--redis-prefix",), DEFAULT_PREFIX,
           "Prefix of the server's Redis event channels", _redis_prefix, "PREFIX"),
    Option("max_concurrent_tasks", "A2A_MAX_CONCURRENT_TASKS", ("--max-concurrent-tasks",), "1",
           "Tasks run at the same time", _concurrency, "N"),
    Option("task_timeout", "A2A_TASK_TIMEOUT", ("--task-timeout",), "3600",
           "Seconds an agent may run before its process group is killed and the task fails", _positive,
           "SECONDS"),
    Option("session_sync_interval", "A2A_SESSION_SYNC_INTERVAL", ("--session-sync-interval",), "60",
           "Seconds between session syncs to the server; 0 disables", _non_negative, "SECONDS"),
    Option("heartbeat_interval", "A2A_HEARTBEAT_INTERVAL", ("--heartbeat-interval",), "15",
           "Seconds between heartbeats (they renew task leases: keep it well under the server's lease)",
           _positive, "SECONDS"),
    Option("drain_timeout", "A2A_DRAIN_TIMEOUT", ("--drain-timeout",), "25",
           "On SIGTERM, seconds running tasks may take to finish before they are handed back",
           _non_negative, "SECONDS"),
    Option("health_port", "A2A_HEALTH_PORT", ("--health-port",), str(DEFAULT_HEALTH_PORT),
           "Port of /healthz, /readyz and /metrics; 0 disables", _port, "PORT"),
    Option("health_host", "A2A_HEALTH_HOST", ("--health-host",), "0.0.0.0",
           "Address the health port binds to", _text, "ADDR"),
    Option("agent_storage", "A2A_AGENT_STORAGE", ("--agent-storage",), "~/.local/share/codetether/storage",
           "The agent's storage folder, read by the session sync (passed to the agent as CODETETHER_STORAGE_DIR)",
           _path, "PATH"),
    Option("log_level", "A2A_LOG_LEVEL", ("--log-level",), "info", "debug, info, warning or error",
           _log_level, "LEVEL"),
)  # fmt: skip

OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
TOKEN_ENV = "A2A_AUTH_TOKEN"
CONFIG_ENV = "A2A_CONFIG"


# --------------------------------------------------------------------------- loading


def read_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError naming the file for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config file {path}: cannot be read ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must hold a JSON object")
    return data


def choose_config_file(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$A2A_CONFIG``, else the default file when it exists."""
    if cli_path:
        return Path(cli_path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def merge_sources(
    cli: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, Any], file_label: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Parsed values for every option that was given, the highest-precedence source winning.

    Pure: no file system or network. Returns the values and warnings (unknown config file keys).
    """
    values: dict[str, Any] = {}
    warnings = [
        f"{file_label or 'config file'}: unknown option {key!r} ignored"
        for key in file_values
        if key not in OPTIONS_BY_KEY and not key.startswith(("_", "$"))
    ]
    for option in OPTIONS:
        if cli.get(option.key) not in (None, []):
            raw = cli[option.key]
            values[option.key] = option.parse(f"{option.key} ({option.flags[0]})", raw)
        elif option.env in environ:
            values[option.key] = option.parse(f"{option.key} ({option.env})", environ[option.env])
        elif option.key in file_values:
            where = f"{option.key} (config file)"
            values[option.key] = option.parse(where, file_values[option.key])
    return values, warnings


def find_agent_bin(configured: str | None, search_path: str | None = None) -> str:
    """Absolute path of the agent program, configured or auto-detected."""
    if configured:
        found = shutil.which(configured, path=search_path)
        if found:
            return found
        candidate = Path(configured).expanduser()
        if candidate.is_file() and not os.access(candidate, os.X_OK):
            raise ConfigError(f"agent_bin: {configured} is not executable")
        raise ConfigError(f"agent_bin: {configured} not found")
    for name in AGENT_CANDIDATES:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    raise ConfigError(
        f"agent_bin: no agent found on PATH (looked for {', '.join(AGENT_CANDIDATES)}); "
        "set --agent-bin or A2A_AGENT_BIN (codetether-example-agent is the bundled example agent)"
    )


def _check_codebase_path(key: str, spec: CodebaseSpec) -> CodebaseSpec:
    path = Path(spec.path).expanduser()
    if not path.is_absolute():
        path = path.resolve()
    if not path.exists():
        raise ConfigError(f"{key}: path {spec.path} of codebase {spec.name!r} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{key}: path {spec.path} of codebase {spec.name!r} is not a directory")
    return CodebaseSpec(name=spec.name, path=str(path), description=spec.description)


def load_config(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Build the configuration from CLI values (``None`` = not given), environment and config file."""
    env = os.environ if environ is None else environ
    config_path = choose_config_file(cli.get("config"), env)
    file_values = read_config_file(config_path) if config_path else {}
    values, warnings = merge_sources(cli, env, file_values, str(config_path or ""))

    if not values.get("server_url"):
        raise ConfigError(
            'server_url is required (--server, A2A_SERVER_URL or "server_url" in the config file)'
        )
    worker_name = values.get("worker_name") or _worker_name("worker_name (hostname)", socket.gethostname())
    codebases = tuple(_check_codebase_path("codebases", spec) for spec in values.get("codebases", ()))
    global_codebase = values.get("global_codebase")
    if global_codebase is not None:
        global_codebase = _check_codebase_path("global_codebase", global_codebase)
    agent_bin = find_agent_bin(values.get("agent_bin") or None, env.get("PATH"))
    token = env.get(TOKEN_ENV, "").strip() or None

    known = {k: v for k, v in values.items() if k not in {"server_url", "worker_name", "agent_bin"}}
    known.update(codebases=codebases, global_codebase=global_codebase)
    return WorkerConfig(
        server_url=values["server_url"],
        worker_name=worker_name,
        agent_bin=agent_bin,
        auth_token=token,
        config_file=config_path,
        warnings=tuple(warnings),
        **known,
    )
