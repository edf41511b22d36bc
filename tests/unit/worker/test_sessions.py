"""Session sync payloads from the agent storage folder, written by the real example agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from codetether_worker.sessions import SessionSyncer, codebase_for, read_sessions, summarise_message


def run_agent(agent: str, cwd: Path, prompt: str, session: str | None = None) -> None:
    argv = [agent, "run", "--agent", "build", "--format", "json"]
    if session:
        argv += ["--session", session]
    subprocess.run([*argv, "--", prompt], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_example_agent_sessions_are_read_back(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    api = tmp_path / "api"
    api.mkdir()
    run_agent(example_agent, api, "Add a readme\n@write README.md # API\n@append README.md more")
    [record] = read_sessions(agent_storage)
    assert record.info.title == "Add a readme"
    assert record.info.agent_type == "build"
    assert record.directory == str(api.resolve())
    assert record.info.message_count == 2
    user, assistant = record.messages
    assert user.role == "user" and user.summary.startswith("Add a readme")
    assert assistant.role == "assistant"
    assert assistant.summary == "Wrote README.md Appended to README.md"
    assert assistant.tool_usage == {"write": 1, "append": 1}
    assert record.info.metadata["tool_usage"] == {"write": 1, "append": 1}
    assert record.info.created_at is not None and record.info.updated_at is not None


def test_continuing_a_session_adds_messages(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    run_agent(example_agent, tmp_path, "@echo one", session="ses_fixed")
    run_agent(example_agent, tmp_path, "@echo two", session="ses_fixed")
    [record] = read_sessions(agent_storage)
    assert record.info.id == "ses_fixed"
    assert record.info.message_count == 4
    assert [m.summary for m in record.messages if m.role == "assistant"] == ["one", "two"]


def test_syncer_groups_by_codebase_and_sends_only_changes(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    api, web, elsewhere = tmp_path / "api", tmp_path / "web", tmp_path / "elsewhere"
    for folder in (api, web, elsewhere, api / "sub"):
        folder.mkdir()
    run_agent(example_agent, api, "@echo a")
    run_agent(example_agent, api / "sub", "@echo nested")
    run_agent(example_agent, web, "@echo w")
    run_agent(example_agent, elsewhere, "@echo nobody's")
    paths = {"cb-api": str(api.resolve()), "cb-web": str(web.resolve())}

    syncer = SessionSyncer(agent_storage)
    plans = syncer.plan(paths)
    assert [p.codebase_id for p in plans] == ["cb-api", "cb-web"]
    assert len(plans[0].sessions) == 2 and len(plans[0].changed) == 2
    assert len(plans[1].sessions) == 1
    for plan in plans:
        syncer.mark_sent(plan.codebase_id, plan.changed)
    assert syncer.plan(paths) == []

    run_agent(example_agent, web, "@echo again")
    [plan] = syncer.plan(paths)
    assert plan.codebase_id == "cb-web"
    assert len(plan.sessions) == 2 and len(plan.changed) == 1

    syncer.forget()
    assert len(syncer.plan(paths)) == 2


def test_malformed_records_are_skipped(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "broken.json").write_text("{nope")
    (sessions / "list.json").write_text("[]")
    (sessions / "ok.json").write_text(json.dumps({"id": "ok", "directory": "/x", "created": 1700000000000}))
    messages = tmp_path / "messages" / "ok"
    messages.mkdir(parents=True)
    (messages / "m1.json").write_text(json.dumps({"role": "user", "parts": [{"type": "text", "text": "hi"}]}))
    (messages / "m2.json").write_text("garbage")
    [record] = read_sessions(tmp_path)
    assert record.info.id == "ok"
    assert [m.id for m in record.messages] == ["m1"]
    assert record.info.created_at is not None and record.info.created_at.year == 2023


def test_summary_is_bounded_and_whitespace_folded() -> None:
    raw = {
        "id": "m",
        "parts": [{"type": "text", "text": "a  \n b " * 500}, {"type": "tool", "tool": "bash"}] * 2,
    }
    summary = summarise_message(raw, "m")
    assert summary is not None
    assert len(summary.summary) == 500 and summary.summary.endswith("…")
    assert "\n" not in summary.summary
    assert summary.tool_usage == {"bash": 2}


def test_codebase_for_picks_the_deepest_folder() -> None:
    paths = {"outer": "/srv", "inner": "/srv/app", "other": "/opt"}
    assert codebase_for("/srv/app/x", paths) == "inner"
    assert codebase_for("/srv/lib", paths) == "outer"
    assert codebase_for("/srvx", paths) is None
    assert codebase_for("", paths) is None
