from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture
def example_agent() -> str:
    """The installed ``codetether-example-agent`` console script of this environment."""
    path = Path(sys.executable).parent / "codetether-example-agent"
    assert path.exists(), "pip install -e . installs the console script"
    return str(path)


@pytest.fixture
def agent_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    storage = tmp_path / "storage"
    monkeypatch.setenv("CODETETHER_STORAGE_DIR", str(storage))
    return storage
