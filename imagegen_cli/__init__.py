"""The imagegen command: run both services, plan, execute, generate. Each prints JSON.

  imagegen up                       both services, embedded defaults, foreground
  imagegen demo                     both services on free ports, one image, then stop
  imagegen plan PROMPT --session-id S [--image-type T] [--style S] [--size WxH] [--context k=v ...] [--mode M]
  imagegen execute [FILE|-]         a plan as JSON, from a file or stdin
  imagegen generate PROMPT --session-id S [...]
  imagegen start PROMPT --session-id S [...]   plan, start its execution, print both at once
  imagegen watch EXECUTION                     each change of an execution, one JSON line each, to its end
  imagegen cancel EXECUTION                    cancel an execution (nothing is stored)
  imagegen executions --session-id S [--page-size N] [--page-token T]

plan, execute, generate, start, watch, cancel and executions reach secured services with --tls-ca (and --tls-cert /
--tls-key for mutual TLS) and the tokens in IMAGEGEN_PLANNER_TOKEN and
IMAGEGEN_EXECUTOR_TOKEN (environment only, so they stay out of shell history and ps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from clients import ChannelOptions, ExecutionFailed, ImagegenCallError, ImagegenClient, PlanningFailed
from clients.aio import AsyncImagegenClient
from imagegen import catalogue
from imagegen.errors import InvalidRequest
from google.protobuf import json_format

from imagegen.json_mapping import plan_from_json, plan_to_dict, result_to_dict
from imagegen_runtime.settings import ConfigError

# up and demo run both services in this process, and the services' dependencies are
# extras: a light install (`pip install imagegen`: the clients and the contract) has
# plan, execute and generate only. A module of this project missing is a bug, not that.
SERVICES_EXTRAS = "imagegen[planner,executor]"
try:
    from executor_service.bootstrap import create_server as create_executor_server
    from executor_service.config import ExecutorSettings
    from imagegen_runtime.security import ServerSecurity
    from imagegen_runtime.serving import RunningServer, serve_until_signalled
    from imagegen_runtime.telemetry.logs import configure_logging
    from planner_service.bootstrap import create_server as create_planner_server
    from planner_service.config import PlannerSettings
except ModuleNotFoundError as missing:
    if (missing.name or "").partition(".")[0] in ("imagegen", "imagegen_runtime", "planner_service", "executor_service"):
        raise
    SERVICES_MISSING: ModuleNotFoundError | None = missing
else:
    SERVICES_MISSING = None

DEMO_PROMPT = "A dwarf cleric raising a glowing warhammer in a torchlit crypt"


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _context(pairs: Sequence[str]) -> dict[str, str]:
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--context takes key=value, got {pair!r}")
        context[key] = value
    return context


async def _start_both(planner: PlannerSettings, executor: ExecutorSettings) -> tuple[RunningServer, RunningServer]:
    running_planner = await create_planner_server(planner)
    try:
        running_executor = await create_executor_server(executor)
    except BaseException:
        await running_planner.stop(None)
        raise
    return running_planner, running_executor


def _host(address: str) -> str:
    return address.rpartition(":")[0] or "127.0.0.1"


async def _up(args: argparse.Namespace) -> None:
    planner = replace(PlannerSettings.from_env(), **({"address": args.planner_address} if args.planner_address else {}))
    executor = replace(ExecutorSettings.from_env(), **({"address": args.executor_address} if args.executor_address else {}))
    configure_logging(planner.log_level, planner.telemetry.log_format)  # LOG_LEVEL, LOG_FORMAT: to stderr
    running_planner, running_executor = await _start_both(planner, executor)
    print(f"planner listening on {_host(planner.address)}:{running_planner.port}", flush=True)
    print(f"executor listening on {_host(executor.address)}:{running_executor.port}", flush=True)
    print(f"images are stored under {executor.local_store_dir.resolve()}", flush=True)
    await serve_until_signalled(
        (running_planner, planner.shutdown_grace_seconds),
        (running_executor, executor.shutdown_grace_seconds),
    )


async def _demo(args: argparse.Namespace) -> None:
    # Loopback servers that live for one call: no TLS, no tokens, whatever the environment says.
    planner = replace(PlannerSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
    executor = replace(ExecutorSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
    configure_logging(planner.log_level, planner.telemetry.log_format)  # LOG_LEVEL, LOG_FORMAT: to stderr
    running_planner, running_executor = await _start_both(planner, executor)
    try:
        async with AsyncImagegenClient(
            f"127.0.0.1:{running_planner.port}", f"127.0.0.1:{running_executor.port}"
        ) as client:
            generation = await client.generate(args.prompt, session_id=args.session_id)
    finally:
        await running_planner.stop(None)
        await running_executor.stop(None)
    _print(generation.payload)
    path = Path(unquote(urlparse(generation.result.image_url).path))
    print(f"\nimage written to {path}", file=sys.stderr)


PLANNER_TOKEN_VARIABLE = "IMAGEGEN_PLANNER_TOKEN"
EXECUTOR_TOKEN_VARIABLE = "IMAGEGEN_EXECUTOR_TOKEN"


def _channel_options(args: argparse.Namespace, token_variable: str) -> ChannelOptions:
    return ChannelOptions(
        tls=args.tls,
        root_ca=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
        server_name=args.tls_server_name,
        token=os.environ.get(token_variable, "").strip() or None,
    )


def _client(args: argparse.Namespace) -> ImagegenClient:
    return ImagegenClient(
        args.planner,
        args.executor,
        planner_options=_channel_options(args, PLANNER_TOKEN_VARIABLE),
        executor_options=_channel_options(args, EXECUTOR_TOKEN_VARIABLE),
    )


def _plan(args: argparse.Namespace) -> None:
    with _client(args) as client:
        plan = client.planner.create_plan(
            args.prompt, session_id=args.session_id, image_type=args.image_type,
            style=args.style, size=args.size, context=_context(args.context), mode=args.mode,
        )
    _print(plan_to_dict(plan))


def _execute(args: argparse.Namespace) -> None:
    text = sys.stdin.read() if args.plan_file == "-" else Path(args.plan_file).read_text("utf-8")
    plan = plan_from_json(text)
    with _client(args) as client:
        result = client.executor.execute_plan(plan, request_id=args.request_id)
    _print(result_to_dict(result))


def _generate(args: argparse.Namespace) -> None:
    with _client(args) as client:
        generation = client.generate(
            args.prompt, session_id=args.session_id, image_type=args.image_type,
            style=args.style, size=args.size, context=_context(args.context), request_id=args.request_id,
            mode=args.mode,
        )
    _print(generation.payload)


def _execution_dict(execution: Any) -> dict[str, Any]:
    return json_format.MessageToDict(execution, preserving_proto_field_name=True)


def _event_dict(event: Any) -> dict[str, Any]:
    """A watch event: the execution, and of a preview its shape, not its bytes."""
    data: dict[str, Any] = {"execution": _execution_dict(event.execution)}
    if event.HasField("preview"):
        preview = event.preview
        data["preview"] = {"mime_type": preview.mime_type, "width": preview.width, "height": preview.height,
                           "byte_size": len(preview.image_data)}
    return data


def _start(args: argparse.Namespace) -> None:
    with _client(args) as client:
        started = client.generate(
            args.prompt, session_id=args.session_id, image_type=args.image_type,
            style=args.style, size=args.size, context=_context(args.context), request_id=args.request_id,
            mode=args.mode, wait=False,
        )
    _print({"plan": plan_to_dict(started.plan), "execution": _execution_dict(started.execution)})  # type: ignore[union-attr]


def _watch(args: argparse.Namespace) -> None:
    with _client(args) as client:
        for event in client.executor.watch_execution(args.execution, timeout=args.timeout):
            print(json.dumps(_event_dict(event), ensure_ascii=False), flush=True)


def _cancel(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print(_execution_dict(client.executor.cancel_execution(args.execution)))


def _executions(args: argparse.Namespace) -> None:
    with _client(args) as client:
        page = client.executor.list_executions(args.session_id, page_size=args.page_size, page_token=args.page_token)
    _print({"executions": [_execution_dict(e) for e in page.executions], "next_page_token": page.next_page_token})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagegen", description="Plan, then execute, D&D images over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run both services in the foreground (embedded defaults)")
    up.add_argument("--planner-address", help="overrides PLANNER_ADDRESS")
    up.add_argument("--executor-address", help="overrides EXECUTOR_ADDRESS")

    demo = commands.add_parser("demo", help="start both services, generate one image, stop")
    demo.add_argument("prompt", nargs="?", default=DEMO_PROMPT)
    demo.add_argument("--session-id", default="demo")

    env = os.environ

    def targets(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--planner", default=env.get("IMAGEGEN_PLANNER") or "127.0.0.1:50051",
                         help="planner target, e.g. dns:///planner.imagegen.svc.cluster.local:50051 (IMAGEGEN_PLANNER)")
        sub.add_argument("--executor", default=env.get("IMAGEGEN_EXECUTOR") or "127.0.0.1:50052",
                         help="executor target (IMAGEGEN_EXECUTOR)")
        tls = sub.add_argument_group("TLS (tokens: IMAGEGEN_PLANNER_TOKEN, IMAGEGEN_EXECUTOR_TOKEN)")
        tls.add_argument("--tls", action="store_true", default=env.get("IMAGEGEN_TLS", "").lower() in ("1", "true", "yes", "on"),
                         help="TLS with the system's root certificates (IMAGEGEN_TLS=1)")
        tls.add_argument("--tls-ca", metavar="FILE", default=env.get("IMAGEGEN_TLS_CA") or None,
                         help="CA certificate that signed the services' certificates; implies --tls (IMAGEGEN_TLS_CA)")
        tls.add_argument("--tls-cert", metavar="FILE", default=env.get("IMAGEGEN_TLS_CERT") or None,
                         help="client certificate for mutual TLS (IMAGEGEN_TLS_CERT)")
        tls.add_argument("--tls-key", metavar="FILE", default=env.get("IMAGEGEN_TLS_KEY") or None,
                         help="client private key for mutual TLS (IMAGEGEN_TLS_KEY)")
        tls.add_argument("--tls-server-name", metavar="NAME", default=env.get("IMAGEGEN_TLS_SERVER_NAME") or None,
                         help="name to check the certificates against instead of the target's host")

    def plan_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("prompt")
        sub.add_argument("--session-id", required=True)
        sub.add_argument("--image-type", choices=catalogue.IMAGE_TYPE_NAMES, help="default: the planner chooses")
        sub.add_argument("--style", choices=sorted(catalogue.STYLES), help="default: the planner chooses")
        sub.add_argument("--size", help="WIDTHxHEIGHT")
        sub.add_argument("--context", action="append", default=[], metavar="KEY=VALUE")
        sub.add_argument("--mode", choices=catalogue.PLANNING_MODES, help="which planner (default: the server's)")
        targets(sub)

    plan_options(commands.add_parser("plan", help="create a plan and print it"))
    execute = commands.add_parser("execute", help="execute a plan read as JSON from a file or stdin")
    execute.add_argument("plan_file", nargs="?", default="-")
    execute.add_argument("--request-id")
    targets(execute)
    generate = commands.add_parser("generate", help="plan, then execute; print the payload")
    plan_options(generate)
    generate.add_argument("--request-id")
    start = commands.add_parser("start", help="plan, then start its execution; print the plan and the execution at once")
    plan_options(start)
    start.add_argument("--request-id")
    watch = commands.add_parser("watch", help="print each change of an execution (a JSON line each) until it ends")
    watch.add_argument("execution", help='its name, "executions/{id}"')
    watch.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    targets(watch)
    cancel = commands.add_parser("cancel", help="cancel an execution; print it")
    cancel.add_argument("execution", help='its name, "executions/{id}"')
    targets(cancel)
    executions = commands.add_parser("executions", help="list a session's executions, newest first")
    executions.add_argument("--session-id", required=True)
    executions.add_argument("--page-size", type=int, default=None, help=f"1 to {catalogue.MAX_EXECUTIONS_PAGE_SIZE}")
    executions.add_argument("--page-token", default=None, help="a next_page_token printed before")
    targets(executions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("up", "demo") and SERVICES_MISSING is not None:
        print(f"imagegen {args.command} runs both services, whose dependencies are not installed "
              f"(no module {SERVICES_MISSING.name!r}): install {SERVICES_EXTRAS}", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            asyncio.run(_up(args))
        elif args.command == "demo":
            asyncio.run(_demo(args))
        else:
            commands = {"plan": _plan, "execute": _execute, "generate": _generate, "start": _start,
                        "watch": _watch, "cancel": _cancel, "executions": _executions}
            commands[args.command](args)
    except (PlanningFailed, ExecutionFailed, ImagegenCallError) as error:
        _print({"error": {"kind": type(error).__name__, "code": error.code.name, "reason": error.reason,
                          "message": error.message, "retryable": error.retryable,
                          "field_violations": [v.__dict__ for v in error.violations]}})
        return 1
    except (InvalidRequest, ConfigError, ValueError, OSError) as error:
        print(f"imagegen: {error}", file=sys.stderr)
        return 2
    return 0
