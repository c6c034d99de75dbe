"""The imagegen command: run both services, plan, execute, generate. Each prints JSON.

  imagegen up                       both services, embedded defaults, foreground, and the web
                                    edge (image route, gallery) where EXECUTOR_PUBLIC_BASE_URL points
  imagegen demo [PROMPT] [--reference [ROLE:]STORAGE_PATH ...] [--serve]
                                    both services on free ports, one image, then stop (--serve: keep
                                    serving its proxy_url until Ctrl-C)
  imagegen check-types PROMPT [--execute] [--offline]
                                    plan PROMPT as every image type and print a table
  imagegen plan PROMPT --session-id S [--image-type T] [--style S] [--size WxH] [--context k=v ...] [--mode M]
  imagegen execute [FILE|-]         a plan as JSON, from a file or stdin
  imagegen generate PROMPT --session-id S [...] [--reference [ROLE:]STORAGE_PATH ...]
  imagegen images --session-id S [--image-type T] [--page-size N] [--page-token T] [--all]
  imagegen delete STORAGE_PATH      one stored image
  imagegen delete-session --session-id S   all of a session's images, requests and executions
  imagegen start PROMPT --session-id S [...] [--reference ...]   plan, start its execution, print both at once
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
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from clients import ChannelOptions, ExecutionFailed, ImagegenCallError, ImagegenClient, PlanningFailed, reference_path
from clients.aio import AsyncImagegenClient
from imagegen import catalogue
from imagegen.errors import InvalidRequest
from google.protobuf import json_format

from imagegen.json_mapping import plan_from_json, plan_to_dict, result_to_dict
from imagegen_runtime.settings import ConfigError

# up and demo run both services in this process, and the services' dependencies are
# extras: a light install (`pip install imagegen`: the clients and the contract) has
# plan, execute and generate only. A module of this project missing is a bug, not that.
SERVICES_EXTRAS = "imagegen[planner,executor,web]"
try:
    from clients.web import create_app
    from clients.web.server import WebServer, web_address
    from executor_service.bootstrap import create_server as create_executor_server
    from executor_service.config import ExecutorSettings
    from imagegen_runtime.security import ServerSecurity
    from imagegen_runtime.serving import RunningServer, serve_until_signalled
    from imagegen_runtime.telemetry.logs import configure_logging
    from planner_service.bootstrap import create_server as create_planner_server
    from planner_service.config import PlannerSettings
except ModuleNotFoundError as missing:
    if (missing.name or "").partition(".")[0] in (
        "imagegen", "imagegen_runtime", "planner_service", "executor_service", "clients"
    ):
        raise
    SERVICES_MISSING: ModuleNotFoundError | None = missing
else:
    SERVICES_MISSING = None

DEMO_PROMPT = "A dwarf cleric raising a glowing warhammer in a torchlit crypt"


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)


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
    drained = False
    try:
        async with _web_edge(args, planner, executor, running_planner, running_executor):
            await serve_until_signalled(
                (running_planner, planner.shutdown_grace_seconds),
                (running_executor, executor.shutdown_grace_seconds),
            )
            drained = True
    finally:
        if not drained:  # the web edge did not start (its port taken, say): stop both servers in this loop
            await running_planner.stop(None)
            await running_executor.stop(None)


@contextlib.asynccontextmanager
async def _no_web() -> AsyncIterator[None]:
    yield None


LOOPBACK_WEB_ADDRESS = ("127.0.0.1", 8000)
_BINDABLE_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::")


def _web_bind(public_base_url: str, override: str | None) -> tuple[str, int, str]:
    """(host, port, image path prefix) for the web edge: where EXECUTOR_PUBLIC_BASE_URL says
    when it names this machine, else 127.0.0.1:8000; --web-address overrides host:port."""
    host, port, prefix = web_address(public_base_url)
    if host not in _BINDABLE_HOSTS:
        host, port = LOOPBACK_WEB_ADDRESS
    if override:
        host, _, port_text = override.rpartition(":")
        host, port = host or "127.0.0.1", int(port_text)
    return host, port, prefix


def _local(address: str, port: int) -> str:
    host = _host(address)
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"


@contextlib.asynccontextmanager
async def _web_edge(
    args: argparse.Namespace, planner: PlannerSettings, executor: ExecutorSettings,
    running_planner: RunningServer, running_executor: RunningServer,
) -> AsyncIterator[WebServer | None]:
    """The image route and the gallery (clients.web) over both services, for as long as
    they run, so every proxy_url printed opens; not with TLS (a backend mounts the app
    itself there, with its own channel options)."""
    if planner.security.tls_cert_file or executor.security.tls_cert_file:
        print("the image route is not served: the services use TLS (mount clients.web in the backend)",
              file=sys.stderr, flush=True)
        yield None
        return
    host, port, prefix = _web_bind(executor.public_base_url, getattr(args, "web_address", None))
    client = AsyncImagegenClient(
        _local(planner.address, running_planner.port), _local(executor.address, running_executor.port),
        planner_options=ChannelOptions(token=planner.security.auth_token or None),
        executor_options=ChannelOptions(token=executor.security.auth_token or None),
    )
    try:
        web = await WebServer(create_app(client, bucket=executor.bucket, image_prefix=prefix or "/"), host, port).start()
        try:
            print(f"image route on {web.url}{prefix}/{{key}}, session gallery on {web.url}/sessions/{{session_id}}",
                  file=sys.stderr, flush=True)
            yield web
        finally:
            await web.stop()
    finally:
        await client.close()


async def _demo(args: argparse.Namespace) -> None:
    # Loopback servers that live for one call: no TLS, no tokens, whatever the environment says.
    planner = replace(PlannerSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
    executor = replace(ExecutorSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
    configure_logging(planner.log_level, planner.telemetry.log_format)  # LOG_LEVEL, LOG_FORMAT: to stderr
    running_planner, running_executor = await _start_both(planner, executor)
    try:
        # Only a demo that stays serves its proxy_url: a one-shot one would stop before it opens.
        web = _web_edge(args, planner, executor, running_planner, running_executor) if args.serve else _no_web()
        async with web:
            async with AsyncImagegenClient(
                f"127.0.0.1:{running_planner.port}", f"127.0.0.1:{running_executor.port}"
            ) as client:
                generation = await client.generate(
                    args.prompt, session_id=args.session_id, reference_images=args.reference
                )
            _print(generation.payload)
            path = Path(unquote(urlparse(generation.result.image_url).path))
            print(f"\nimage written to {path}", file=sys.stderr, flush=True)
            if args.serve:
                print(f"serving {generation.result.proxy_url} until Ctrl-C", file=sys.stderr, flush=True)
                await serve_until_signalled()
    finally:
        await running_planner.stop(None)
        await running_executor.stop(None)


CHECK_PROMPT_CHARS = 48  # how much of each enhanced prompt check-types shows


async def _check_types(args: argparse.Namespace) -> int:
    """Plan the prompt as every image type of the catalogue (and with --execute, execute
    each plan); print one row per type. --offline: both services in this process."""
    if not args.offline:
        async with _async_client(args) as client:
            rows = await _check_rows(client, args)
    else:
        planner = replace(PlannerSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
        executor = replace(ExecutorSettings.from_env(), address="127.0.0.1:0", security=ServerSecurity())
        configure_logging("WARNING", planner.telemetry.log_format)  # the table is the output
        running_planner, running_executor = await _start_both(planner, executor)
        try:
            async with AsyncImagegenClient(
                f"127.0.0.1:{running_planner.port}", f"127.0.0.1:{running_executor.port}"
            ) as client:
                rows = await _check_rows(client, args)
        finally:
            await running_planner.stop(None)
            await running_executor.stop(None)
    columns = ["type", "size", "style", "prompt", "plan_id"] + (["stored at"] if args.execute else [])
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    for row in [columns, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), flush=True)
    return 1 if any(row[-1].startswith("failed:") for row in rows) else 0


async def _check_rows(client: AsyncImagegenClient, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for name in catalogue.IMAGE_TYPE_NAMES:
        try:
            plan = await client.planner.create_plan(
                args.prompt, session_id=args.session_id, image_type=name, style=args.style, mode=args.mode
            )
        except PlanningFailed as error:
            rows.append([name, "", "", "", *([""] if args.execute else []), f"failed: {error.code.name} {error.reason}"])
            continue
        # For a terminal: line breaks and control characters (escapes an LLM or a caller put
        # in the prompt) shown as spaces, never sent to the terminal to run.
        prompt = "".join(char if char.isprintable() else " " for char in plan.enhanced_prompt)
        if len(prompt) > CHECK_PROMPT_CHARS:
            prompt = prompt[: CHECK_PROMPT_CHARS - 1] + "…"
        row = [name, plan.size, plan.style, prompt, plan.plan_id]
        if args.execute:
            try:
                result = await client.executor.execute_plan(plan)
            except ExecutionFailed as error:
                row.append(f"failed: {error.code.name} {error.reason}")
            else:
                row.append(result.storage_path + (" (reused)" if result.reused else ""))
        rows.append(row)
    return rows


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


def _reference(text: str) -> str:
    """--reference's value, "[ROLE:]STORAGE_PATH", checked here so a bad role is a usage error."""
    try:
        reference_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _async_client(args: argparse.Namespace) -> AsyncImagegenClient:
    return AsyncImagegenClient(
        args.planner,
        args.executor,
        planner_options=_channel_options(args, PLANNER_TOKEN_VARIABLE),
        executor_options=_channel_options(args, EXECUTOR_TOKEN_VARIABLE),
    )


def _plan(args: argparse.Namespace) -> None:
    with _client(args) as client:
        references = [client.executor.reference_image(path) for path in args.reference]
        plan = client.planner.create_plan(
            args.prompt, session_id=args.session_id, image_type=args.image_type,
            style=args.style, size=args.size, context=_context(args.context), mode=args.mode,
            reference_images=references,
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
            mode=args.mode, reference_images=args.reference,
        )
    _print(generation.payload)


def _images(args: argparse.Namespace) -> None:
    """A page of the session's images (with --all, every page) and the next page's token."""
    with _client(args) as client:
        if args.all:
            images = list(client.executor.iter_images(args.session_id, image_type=args.image_type, page_size=args.page_size))
            _print({"images": [result_to_dict(image) for image in images], "next_page_token": ""})
            return
        page = client.executor.list_images(
            args.session_id, image_type=args.image_type, page_size=args.page_size, page_token=args.page_token
        )
    _print({"images": [result_to_dict(image) for image in page.images], "next_page_token": page.next_page_token})


def _delete(args: argparse.Namespace) -> None:
    with _client(args) as client:
        client.executor.delete_image(args.storage_path)
    _print({"deleted": args.storage_path})


def _delete_session(args: argparse.Namespace) -> None:
    with _client(args) as client:
        deleted = client.executor.delete_session_images(args.session_id)
    _print({"session_id": args.session_id, "deleted_count": deleted})


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
            mode=args.mode, reference_images=args.reference, wait=False,
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
    web_help = "host:port of the image route and gallery (default: where EXECUTOR_PUBLIC_BASE_URL points)"
    up.add_argument("--web-address", help=web_help)

    demo = commands.add_parser("demo", help="start both services, generate one image, stop")
    demo.add_argument("prompt", nargs="?", default=DEMO_PROMPT)
    demo.add_argument("--session-id", default="demo")
    demo.add_argument(
        "--reference", action="append", default=[], type=_reference, metavar="[ROLE:]STORAGE_PATH",
        help="an image an earlier demo stored in the session (its storage_path), for this one to keep",
    )
    demo.add_argument("--serve", action="store_true", help="keep serving the image's proxy_url until Ctrl-C")
    demo.add_argument("--web-address", help=web_help)

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
        sub.add_argument(
            "--reference", action="append", default=[], type=_reference, metavar="[ROLE:]STORAGE_PATH",
            help="a stored image of the session the plan is to use, e.g. a character's portrait (repeatable, "
            f"in order; ROLE one of {', '.join(catalogue.REFERENCE_ROLES)}, default subject)",
        )
        targets(sub)

    plan_options(commands.add_parser("plan", help="create a plan and print it"))
    execute = commands.add_parser("execute", help="execute a plan read as JSON from a file or stdin")
    execute.add_argument("plan_file", nargs="?", default="-")
    execute.add_argument("--request-id")
    targets(execute)
    generate = commands.add_parser("generate", help="plan, then execute; print the payload")
    plan_options(generate)
    generate.add_argument("--request-id")
    images = commands.add_parser("images", help="list a session's stored images, newest first")
    images.add_argument("--session-id", required=True)
    images.add_argument("--image-type", choices=catalogue.IMAGE_TYPE_NAMES, help="default: every type")
    images.add_argument("--page-size", type=int, default=0,
                        help=f"at most {catalogue.MAX_LIST_PAGE_SIZE} (default {catalogue.DEFAULT_LIST_PAGE_SIZE})")
    images.add_argument("--page-token", default="", help="the next_page_token of the previous page")
    images.add_argument("--all", action="store_true", help="every page")
    targets(images)
    delete = commands.add_parser("delete", help="delete one stored image (its storage_path)")
    delete.add_argument("storage_path")
    targets(delete)
    delete_session = commands.add_parser("delete-session", help="delete all of a session's images, request records and executions")
    delete_session.add_argument("--session-id", required=True)
    targets(delete_session)

    check = commands.add_parser("check-types", help="plan a prompt as every image type; print a table")
    check.add_argument("prompt")
    check.add_argument("--session-id", default="check-types")
    check.add_argument("--style", choices=sorted(catalogue.STYLES), help="default: the planner chooses")
    check.add_argument("--mode", choices=catalogue.PLANNING_MODES, help="which planner (default: the server's)")
    check.add_argument("--execute", action="store_true", help="also execute each plan; show where it is stored")
    check.add_argument("--offline", action="store_true",
                       help="no running service needed: both run in this process (embedded defaults)")
    targets(check)
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
    if (args.command in ("up", "demo") or getattr(args, "offline", False)) and SERVICES_MISSING is not None:
        print(f"imagegen {args.command} runs both services, whose dependencies are not installed "
              f"(no module {SERVICES_MISSING.name!r}): install {SERVICES_EXTRAS}", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            asyncio.run(_up(args))
        elif args.command == "demo":
            asyncio.run(_demo(args))
        elif args.command == "check-types":
            return asyncio.run(_check_types(args))
        else:
            commands = {
                "plan": _plan, "execute": _execute, "generate": _generate,
                "images": _images, "delete": _delete, "delete-session": _delete_session,
                "start": _start, "watch": _watch, "cancel": _cancel, "executions": _executions,
            }
            commands[args.command](args)
    except (PlanningFailed, ExecutionFailed, ImagegenCallError) as error:
        _print({"error": {"kind": type(error).__name__, "code": error.code.name, "reason": error.reason,
                          "message": error.message, "retryable": error.retryable,
                          "field_violations": [v.__dict__ for v in error.violations],
                          **({"quota_violations": [{"subject": s, "description": d} for s, d in error.quota_violations]}
                             if error.quota_violations else {}),
                          **({"retry_after": error.retry_after} if error.retry_after is not None else {})}})
        return 1
    except (InvalidRequest, ConfigError, ValueError, OSError) as error:
        print(f"imagegen: {error}", file=sys.stderr)
        return 2
    return 0
