"""The planner process contacts nothing but its configured LLM and writes no file.

`python -m planner_service` runs under a launcher that installs an audit hook
(PEP 578) before anything else is imported: every Python-level connect, name
lookup, file opened for writing, directory made, file renamed or removed, and
process started is written to a file opened before the hook, so the record
cannot record itself. The gRPC server's own sockets live in grpc's C core and
are not audited; they are the planner's listening port, not an outbound contact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from clients import AsyncPlannerClient
from imagegen.v1 import planner_service_pb2_grpc
from imagegen.v1.planner_service_pb2 import CreatePlanRequest, PlanningMode
from planner_service.openai_agent import TOOL_NAME
from tests.support import fake_openai as fo

pytestmark = pytest.mark.integration

API_KEY = "sk-test-isolation-5555"
ANSWER = {"enhanced_prompt": "A lighthouse on a storm-lashed cliff.", "image_type": "location",
          "style": "watercolor", "size": "1536x1024"}

LAUNCHER = r'''
import os, runpy, sys

record = open(sys.argv[1], "w", buffering=1)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
FILE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.link", "os.symlink",
               "os.truncate", "shutil.copyfile", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp"}


def audit(event, args):
    if event == "socket.connect":
        record.write(f"connect {args[1]!r}\n")
    elif event == "socket.getaddrinfo":
        record.write(f"lookup {args[0]!r}\n")
    elif event in ("socket.sendto", "socket.sendmsg"):
        record.write(f"send {args!r}\n")
    elif event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            record.write(f"write {path!r} {mode!r}\n")
    elif event in FILE_EVENTS or event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"):
        record.write(f"{event} {args!r}\n")


sys.addaudithook(audit)
sys.argv = ["planner_service"]
runpy.run_module("planner_service", run_name="__main__", alter_sys=True)
'''


async def test_planner_contacts_only_its_llm_and_writes_no_file(tmp_path: Path, fake_openai: fo.FakeOpenAI) -> None:
    cwd, home, tmp = (tmp_path / name for name in ("cwd", "home", "tmp"))
    for folder in (cwd, home, tmp):
        folder.mkdir()
    launcher, record = tmp_path / "launcher.py", tmp_path / "audit.log"
    launcher.write_text(LAUNCHER)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home), "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",  # the interpreter's bytecode cache, not the planner's doing
        "PLANNER_ADDRESS": "127.0.0.1:0",
        "PLANNER_LLM_BASE_URL": fake_openai.base_url,
        "PLANNER_LLM_API_KEY": API_KEY,
        "PLANNER_LLM_MAX_RETRIES": "0",
        "PLANNER_LLM_TIMEOUT_SECONDS": "1",
        "PLANNER_SHUTDOWN_GRACE_SECONDS": "0",
        "LOG_LEVEL": "DEBUG",
    }
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER), fo.error(503, "overloaded"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(launcher), str(record), cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    logs: list[str] = []
    try:
        port = await asyncio.wait_for(_listening_port(process, logs), timeout=20)
        target = f"127.0.0.1:{port}"
        async with AsyncPlannerClient(target, timeout=10) as client:
            llm_plan = await client.create_plan("A lighthouse in a storm", session_id="s")
            fell_back = await client.create_plan("A ship in a storm", session_id="s")  # the 503
        async with grpc.aio.insecure_channel(target) as channel:  # the clients take no mode
            offline = (await planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(CreatePlanRequest(
                prompt="A rusty longsword", session_id="s", mode=PlanningMode.PLANNING_MODE_OFFLINE))).plan
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=20)  # type: ignore[union-attr]
        logs.append(rest.decode())
        await asyncio.wait_for(process.wait(), timeout=20)

    assert (llm_plan.provenance.planner, fell_back.provenance.fell_back, offline.provenance.planner) == (
        "llm", True, "offline")
    assert len(fake_openai.chat_requests) == 2
    events = record.read_text().splitlines()
    contacts = {line for line in events if line.startswith(("connect", "lookup", "send"))}
    assert contacts and contacts <= {f"connect ('127.0.0.1', {fake_openai.port})",
                                     f"lookup '127.0.0.1'"}, events
    # The one other event: the openai SDK learns the CPU for its platform headers by
    # running `uname -p` (Python's platform module), its output sent to /dev/null.
    others = {line for line in events if not line.startswith(("connect", "lookup"))}
    assert others <= {"subprocess.Popen ('uname', ['uname', '-p'], None, None)", "write '/dev/null' None"}, events
    assert [p for folder in (cwd, home, tmp) for p in folder.rglob("*")] == []
    assert API_KEY not in "".join(logs)  # not even at DEBUG


async def _listening_port(process: asyncio.subprocess.Process, logs: list[str]) -> int:
    while True:
        line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
        if not line:
            raise AssertionError("the planner exited before listening:\n" + "".join(logs))
        logs.append(line)
        if "listening on port" in line:
            return int(line.split("listening on port ")[1].split(";")[0])
