"""`make demo` and `imagegen up` as the README runs them: the proxy_urls they print open, over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.cli import IMAGEGEN, run
from tests.support.s3_server import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_serves_the_proxy_url_it_prints(tmp_path: Path) -> None:
    # A free port instead of 8000 (whoever else runs a demo here keeps theirs); the store in tmp_path.
    (port,) = free_ports(1)
    env = {**os.environ, "EXECUTOR_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/images",
           "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "store")}  # fmt: skip
    process = subprocess.Popen(
        ["make", "-s", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # make and imagegen in one process group, ended together below
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        while (line := process.stdout.readline()) and line != "}\n":  # the payload, printed once the route listens
            lines.append(line)
        payload = json.loads("".join(lines) + line)
        assert payload["proxy_url"].startswith(f"http://127.0.0.1:{port}/images/demo/character/")

        with httpx.Client(trust_env=False, timeout=30) as http:
            response = http.get(payload["proxy_url"])
            head = http.head(payload["proxy_url"])
        stored = (tmp_path / "store" / payload["storage_path"].removeprefix("imagegen/")).read_bytes()
        assert response.status_code == 200 and response.content == stored
        assert response.headers["content-type"] == "image/png" == payload["mime_type"]
        assert response.headers["etag"] == f'"{hashlib.sha256(stored).hexdigest()}"' == f'"{payload["content_sha256"]}"'
        assert head.status_code == 200 and head.headers["content-length"] == str(len(stored))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert f"serving {payload['proxy_url']} until Ctrl-C" in stderr


def test_imagegen_up_serves_the_proxy_urls_and_gallery_where_the_public_base_url_points(tmp_path: Path) -> None:
    port, planner_port, executor_port = free_ports(3)
    env = {**os.environ, "EXECUTOR_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/images",
           "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "store")}  # fmt: skip
    up = subprocess.Popen(
        [*IMAGEGEN, "up", "--planner-address", f"127.0.0.1:{planner_port}", "--executor-address", f"127.0.0.1:{executor_port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert up.stderr is not None
        while "image route on" not in (line := up.stderr.readline()):  # printed once it listens
            assert line, "imagegen up ended"
        assert f"http://127.0.0.1:{port}/images/{{key}}" in line
        generated = run(["generate", "A rusty longsword", "--session-id", "up-1", "--planner", f"127.0.0.1:{planner_port}",
                         "--executor", f"127.0.0.1:{executor_port}"], cwd=tmp_path)  # fmt: skip
        assert generated.returncode == 0, generated.stderr
        payload = json.loads(generated.stdout)
        with httpx.Client(trust_env=False, timeout=30) as http:
            image = http.get(payload["proxy_url"])
            page = http.get(f"http://127.0.0.1:{port}/sessions/up-1")
        assert image.status_code == 200 and hashlib.sha256(image.content).hexdigest() == payload["content_sha256"]
        assert page.status_code == 200 and "gallery.js" in page.text
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0


def test_imagegen_up_with_its_web_port_taken_stops_both_servers_and_says_why(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run(["up", "--planner-address", "127.0.0.1:0", "--executor-address", "127.0.0.1:0",
                    "--web-address", f"127.0.0.1:{port}"], tmp_path,
                   env={"EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "store")})  # fmt: skip
    assert done.returncode == 2
    assert "Address already in use" in done.stderr or "address already in use" in done.stderr
    # The gRPC servers were stopped in the loop that ran them, not left to the garbage collector.
    assert "never awaited" not in done.stderr and "Event loop is closed" not in done.stderr
