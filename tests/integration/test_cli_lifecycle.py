"""imagegen images / delete / delete-session, and a quota refusal, as a user runs them:
`imagegen up` and the commands as separate processes on real ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import cli

pytestmark = pytest.mark.integration


def test_list_delete_and_a_session_over_its_quota_from_the_command_line(tmp_path: Path) -> None:
    with cli.imagegen_up(tmp_path, {"EXECUTOR_SESSION_QUOTA": "2/hour"}) as (planner, executor):
        targets = ["--planner", planner, "--executor", executor]

        def run(*args: str) -> dict:
            done = cli.run([*args, *targets], tmp_path)
            assert done.returncode in (0, 1), done.stderr
            return json.loads(done.stdout)

        first = run("generate", "A ring of invisibility", "--session-id", "cli", "--image-type", "item")
        second = run("generate", "A cursed crown", "--session-id", "cli", "--image-type", "item")
        over = run("generate", "A silver dagger", "--session-id", "cli", "--image-type", "item")["error"]
        assert (over["code"], over["reason"]) == ("RESOURCE_EXHAUSTED", "SESSION_QUOTA_EXCEEDED")
        assert over["quota_violations"] == [{"subject": "session:cli", "description": "at most 2/hour new renders"}]
        assert 3500 < over["retry_after"] <= 3600

        page = run("images", "--session-id", "cli", "--page-size", "1")
        assert [i["storage_path"] for i in page["images"]] in ([second["storage_path"]], [first["storage_path"]])
        rest = run("images", "--session-id", "cli", "--page-size", "1", "--page-token", page["next_page_token"])
        assert rest["next_page_token"] == ""
        everything = run("images", "--session-id", "cli", "--all", "--image-type", "item")["images"]
        assert {i["storage_path"] for i in everything} == {first["storage_path"], second["storage_path"]}
        assert isinstance(everything[0]["provider"]["estimated_cost_micros"], int)

        tampered = run("images", "--session-id", "cli", "--page-token", page["next_page_token"][:-3] + "abc")["error"]
        assert (tampered["code"], tampered["field_violations"][0]["field"]) == ("INVALID_ARGUMENT", "page_token")

        assert run("delete", first["storage_path"]) == {"deleted": first["storage_path"]}
        assert [i["storage_path"] for i in run("images", "--session-id", "cli")["images"]] == [second["storage_path"]]
        assert run("delete-session", "--session-id", "cli") == {"session_id": "cli", "deleted_count": 1}
        assert run("delete-session", "--session-id", "cli") == {"session_id": "cli", "deleted_count": 0}
        assert run("images", "--session-id", "cli") == {"images": [], "next_page_token": ""}
