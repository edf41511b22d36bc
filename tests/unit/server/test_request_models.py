"""Properties of the request models as the server receives them: what a client sends, the server reads
back unchanged; what it must refuse, it refuses naming the field."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from codetether_contract.models import (
    ID_PATTERN,
    CodebaseCreate,
    TaskCreate,
    TaskOutputChunk,
    WorkerRegistration,
)

ids = st.from_regex(ID_PATTERN, fullmatch=True)
texts = st.text(min_size=1, max_size=50).filter(lambda s: s.strip() == s and s)
capabilities = st.lists(st.text(alphabet="abcdefgh-", min_size=1, max_size=8), max_size=5)


@given(
    title=texts,
    prompt=texts,
    codebase_id=ids,
    priority=st.integers(min_value=-1000, max_value=1000),
    caps=capabilities,
    use_alias=st.booleans(),
)
def test_a_task_survives_the_wire(
    title: str, prompt: str, codebase_id: str, priority: int, caps: list[str], use_alias: bool
) -> None:
    body: dict[str, Any] = {
        "title": title,
        "prompt": prompt,
        "priority": priority,
        "metadata": {"required_capabilities": caps},
        ("workspace_id" if use_alias else "codebase_id"): codebase_id,
    }
    parsed = TaskCreate.model_validate(body)
    again = TaskCreate.model_validate_json(parsed.model_dump_json())
    assert again == parsed
    assert (again.codebase_id, again.priority, again.metadata["required_capabilities"]) == (
        codebase_id,
        priority,
        caps,
    )


@given(priority=st.integers().filter(lambda p: not -1000 <= p <= 1000))
def test_out_of_range_priority_names_the_field(priority: int) -> None:
    try:
        TaskCreate.model_validate({"title": "t", "prompt": "p", "priority": priority})
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("priority",)]
    else:
        raise AssertionError("accepted")


url_breaking = st.builds(
    lambda head, char, tail: f"a{head}{char}{tail}z",
    st.text(max_size=10),
    st.sampled_from(["/", " ", "?", "#", "\n"]),
    st.text(max_size=10),
)


@given(bad=url_breaking)
def test_ids_with_url_breaking_characters_are_refused(bad: str) -> None:
    for model, field, extra in (
        (WorkerRegistration, "worker_id", {}),
        (CodebaseCreate, "codebase_id", {"name": "n", "path": "/p"}),
        (CodebaseCreate, "worker_id", {"name": "n", "path": "/p"}),
    ):
        try:
            model.model_validate({**extra, field: bad})
        except ValidationError as exc:
            assert any(e["loc"] == (field,) for e in exc.errors())
        else:
            raise AssertionError(f"{model.__name__}.{field} accepted {bad!r}")


@given(output=st.text(max_size=200))
def test_output_keeps_every_character(output: str) -> None:
    assert TaskOutputChunk.model_validate({"worker_id": "w1", "output": output}).output == output
