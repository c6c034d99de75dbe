"""Every command in docs/grpcurl.md (and the README's grpcurl section), run with the
real grpcurl against real services, output checked: the cookbook cannot rot.

The documents mark what the test needs in HTML comments, invisible when rendered:
`<!-- grpcurl-test: setup -->` before the block that names the shell variables,
`<!-- grpcurl-test: services=MODE -->` for the services the following blocks talk
to (plaintext, token, tls, mtls), and after each block `<!-- expect: TEXT -->`
(exit 0 and TEXT in the output) or `<!-- expect-fail: TEXT -->` (a non-zero exit
and TEXT in the output). Blocks run in order, each in its own bash with
`set -euo pipefail`, all in one directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen.v1 import executor_service_pb2, planner_service_pb2
from imagegen_runtime.security import ServerSecurity
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRPCURL = Path(sys.executable).parent / "grpcurl"
PLANNER_TOKEN = "cookbook-planner-token-0123456789"
EXECUTOR_TOKEN = "cookbook-executor-token-0123456789"
README_DEFAULTS = {"127.0.0.1:50051": "PLANNER", "127.0.0.1:50052": "EXECUTOR"}


@dataclass
class Block:
    line: int
    mode: str
    script: str
    expect: list[str] = field(default_factory=list)
    expect_fail: list[str] = field(default_factory=list)


@dataclass
class Cookbook:
    setup: str
    blocks: list[Block]


def parse(text: str, mode: str = "") -> Cookbook:
    setup, blocks, pending_setup = "", [], False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if marker := re.fullmatch(r"<!-- grpcurl-test: (.+?) -->", line):
            if marker[1] == "setup":
                pending_setup = True
            else:
                mode = marker[1].removeprefix("services=")
        elif line == "```sh":
            start = i + 1
            i = lines.index("```", start)
            script = "\n".join(lines[start:i])
            if pending_setup:
                setup, pending_setup = script, False
            else:
                blocks.append(Block(start, mode, script))
        elif blocks and (expected := re.fullmatch(r"<!-- expect(-fail)?: (.+) -->", line)):
            (blocks[-1].expect_fail if expected[1] else blocks[-1].expect).append(expected[2])
        i += 1
    return Cookbook(setup, blocks)


def cookbook() -> Cookbook:
    return parse((REPO / "docs/grpcurl.md").read_text())


def readme_cookbook() -> Cookbook:
    """The README's grpcurl section: plaintext, at the `make up` addresses."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## grpcurl") :]
    section = section[: section.index("\n## ", 1)]
    book = parse(section, mode="plaintext")
    for block in book.blocks:
        for address, variable in README_DEFAULTS.items():
            block.script = block.script.replace(address, f'"${variable}"')
    return book


# ---- the services each section talks to ----------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def security_for(mode: str, pki: Pki, token: str) -> ServerSecurity:
    tls = ServerSecurity(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key))
    return {
        "plaintext": ServerSecurity(),
        "token": ServerSecurity(auth_token=token),
        "tls": replace(tls, auth_token=token, health_address="127.0.0.1:0"),
        "mtls": replace(tls, auth_token=token, tls_client_ca_file=str(pki.ca)),
    }[mode]


@contextlib.asynccontextmanager
async def services(modes: set[str], pki: Pki, store: Path) -> AsyncIterator[dict[str, dict[str, str]]]:
    """Planner and executor per mode; yields mode -> the shell variables for it."""
    env = {
        "CA": str(pki.ca), "CERT": str(pki.client_cert), "KEY": str(pki.client_key),
        "PLANNER_TOKEN": PLANNER_TOKEN, "EXECUTOR_TOKEN": EXECUTOR_TOKEN,
    }  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        by_mode: dict[str, dict[str, str]] = {}
        for mode in sorted(modes):
            planner = await create_planner_server(
                PlannerSettings(address="127.0.0.1:0", security=security_for(mode, pki, PLANNER_TOKEN))
            )
            stack.push_async_callback(planner.stop, None)
            executor = await create_executor_server(
                ExecutorSettings(
                    address="127.0.0.1:0", local_store_dir=store / mode,
                    security=security_for(mode, pki, EXECUTOR_TOKEN),
                )
            )  # fmt: skip
            stack.push_async_callback(executor.stop, None)
            by_mode[mode] = env | {"PLANNER": f"127.0.0.1:{planner.port}", "EXECUTOR": f"127.0.0.1:{executor.port}"}
            if planner.health_port:
                by_mode[mode]["PLANNER_HEALTH"] = f"127.0.0.1:{planner.health_port}"
        yield by_mode


async def run_block(block: Block, variables: dict[str, str], cwd: Path) -> list[str]:
    """Problems with one block: its exit status and missing output."""
    env = {**os.environ, **variables, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}"}
    # A subprocess, awaited, so the servers on this loop keep serving meanwhile.
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", f"set -euo pipefail\n{block.script}", cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output_bytes, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    output = output_bytes.decode(errors="replace")
    where = f"block at line {block.line} ({block.mode})"
    problems = []
    if block.expect and process.returncode != 0:
        problems.append(f"{where} exited {process.returncode}:\n{output}")
    if block.expect_fail and process.returncode == 0:
        problems.append(f"{where} was expected to fail:\n{output}")
    problems += [f"{where}: no {text!r} in:\n{output}" for text in block.expect + block.expect_fail if text not in output]
    return problems


async def run_cookbook(book: Cookbook, pki: Pki, tmp_path: Path) -> list[str]:
    work = tmp_path / "work"
    work.mkdir()
    async with services({b.mode for b in book.blocks}, pki, tmp_path / "store") as by_mode:
        problems: list[str] = []
        for block in book.blocks:
            problems += await run_block(block, by_mode[block.mode], work)
    return problems


# ---- the tests -------------------------------------------------------------------------


async def test_every_command_in_the_cookbook_works(pki: Pki, tmp_path: Path) -> None:
    assert GRPCURL.is_file()
    problems = await run_cookbook(cookbook(), pki, tmp_path)
    assert not problems, "\n\n".join(problems)


async def test_the_readme_grpcurl_commands_work(pki: Pki, tmp_path: Path) -> None:
    book = readme_cookbook()
    assert len(book.blocks) == 1
    problems = await run_cookbook(book, pki, tmp_path)
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("book", [cookbook, readme_cookbook], ids=["cookbook", "readme"])
def test_every_block_says_what_to_expect(book) -> None:  # type: ignore[no-untyped-def]
    blocks = book().blocks
    assert blocks
    for block in blocks:
        assert block.expect or block.expect_fail, f"block at line {block.line} has no expect comment"
        assert not (block.expect and block.expect_fail), f"block at line {block.line} expects both"
        assert block.mode in ("plaintext", "token", "tls", "mtls"), f"block at line {block.line}: mode {block.mode!r}"


def test_the_setup_names_exactly_the_variables_the_commands_use() -> None:
    book = cookbook()
    named = set(re.findall(r"(?:^|\s)([A-Z_]+)=", book.setup, re.MULTILINE))
    used = {  # less what a block sets for itself (STORAGE_PATH, NAME)
        v for b in book.blocks for v in re.findall(r"\$\{?([A-Z_]+)", b.script)
        if not re.search(rf"(?:^|\s){v}=", b.script, re.MULTILINE)
    }
    assert named == used
    assert named == {"PLANNER", "EXECUTOR", "PLANNER_HEALTH", "CA", "CERT", "KEY", "PLANNER_TOKEN", "EXECUTOR_TOKEN"}


def test_the_cookbook_covers_every_rpc() -> None:
    scripts = "\n".join(b.script for b in cookbook().blocks)
    for module, name in ((planner_service_pb2, "PlannerService"), (executor_service_pb2, "ExecutorService")):
        service = module.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            assert f"{service.full_name}/{method.name}" in scripts, f"no command for {method.name}"
    for needed in (" list", " describe ", "grpc.health.v1.Health/Check", "-cacert", "-cert", "authorization: Bearer"):
        assert needed in scripts


def test_a_wrong_expectation_is_caught() -> None:
    """The parser and the checks bite: a block whose output lacks its expected text fails."""
    book = parse("<!-- grpcurl-test: services=plaintext -->\n```sh\necho hello\n```\n<!-- expect: goodbye -->\n")
    (block,) = book.blocks
    problems = asyncio.run(run_block(block, {}, Path.cwd()))
    assert len(problems) == 1 and "no 'goodbye'" in problems[0]
