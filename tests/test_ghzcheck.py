"""bench/ghz configs are checked the way ghz reads them (grpcurl's parser, not json_format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import ghzcheck

PROTOS = ghzcheck.ROOT / "protos"


def _config(tmp_path: Path, data: dict[str, Any], call: str = "UpdatePost") -> Path:
    path = tmp_path / "config.json"
    config = {
        "proto": str(PROTOS / "blog/v1/post_service.proto"),
        "import-paths": [str(PROTOS)],
        "call": f"blog.v1.PostService.{call}",
        "host": "127.0.0.1:50051",
        "insecure": True,
        "data": data,
    }
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("path", sorted(ghzcheck.GHZ_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_sends_its_data(path: Path) -> None:
    assert ghzcheck.problems(path) == []


def test_a_field_mask_in_its_string_form_is_refused(tmp_path: Path) -> None:
    """The mapping json_format accepts ("title") is one ghz cannot send."""
    path = _config(tmp_path, {"post": {"id": "7", "title": "t"}, "update_mask": "title"})
    found = ghzcheck.problems(path)
    assert len(found) == 1 and "cannot send data" in found[0], found


def test_a_field_mask_as_an_object_is_sent(tmp_path: Path) -> None:
    data = {"post": {"id": "{{randomInt 1 500001}}"}, "update_mask": {"paths": ["title"]}}
    assert ghzcheck.problems(_config(tmp_path, data)) == []


def test_an_unknown_field_and_an_unknown_call_are_reported(tmp_path: Path) -> None:
    assert "cannot send data" in " ".join(ghzcheck.problems(_config(tmp_path, {"titel": "x"})))
    assert "unknown call" in " ".join(ghzcheck.problems(_config(tmp_path, {}, "Nope")))
