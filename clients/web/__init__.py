"""The web edge the game backend serves: the image route behind proxy_url and the session
gallery page, as one Starlette app (pip install 'imagegen[web]').

    from clients import AsyncImagegenClient
    from clients.web import create_app

    imagegen = AsyncImagegenClient("127.0.0.1:50051", "127.0.0.1:50052")
    app = create_app(imagegen)              # serve it with any ASGI server, or
    fastapi_app.mount("/", create_app(imagegen))   # in a FastAPI backend, as is

Routes (docs/backend.md):
  GET, HEAD /images/{key}                  the stored image (clients.web.images)
  GET  /sessions/{session_id}              the gallery page (clients.web.gallery)
  GET  /sessions/{session_id}/images       its images as JSON, newest first
  POST /sessions/{session_id}/generations  plan and execute a prompt, stages as NDJSON
  GET  /sessions/{session_id}/events       every execution of the session as it changes (SSE)
  GET  /static/...                         the page's CSS and JavaScript

The app uses the client it is given and never closes it: its owner does.
It imports only the contract and the clients, never a service.
"""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clients.aio import AsyncImagegenClient
from clients.web.gallery import Gallery, list_session_images
from clients.web.images import ImageRoute

DEFAULT_BUCKET = "imagegen"  # the executor's EXECUTOR_BUCKET default
DEFAULT_IMAGE_PREFIX = "/images"  # the path of EXECUTOR_PUBLIC_BASE_URL's default


def create_app(
    client: AsyncImagegenClient, *, bucket: str = DEFAULT_BUCKET, image_prefix: str = DEFAULT_IMAGE_PREFIX
) -> Starlette:
    """The app over client. bucket: the executor's EXECUTOR_BUCKET; image_prefix: the path
    of its EXECUTOR_PUBLIC_BASE_URL, so that every proxy_url (base + "/" + key) is a route here."""
    gallery = Gallery(client)
    image_route = ImageRoute(client.executor, bucket)
    static = StaticFiles(directory=str(resources.files("clients.web").joinpath("static")))
    app = Starlette(
        routes=[
            Route("/sessions/{session_id}", gallery.page, methods=["GET"]),
            Route("/sessions/{session_id}/images", gallery.images, methods=["GET"]),
            Route("/sessions/{session_id}/generations", gallery.generate, methods=["POST"]),
            Route("/sessions/{session_id}/events", gallery.events, methods=["GET"]),
            Mount("/static", static, name="static"),
            # Last: with an empty prefix (a base URL with no path) it takes every other path.
            Route(image_prefix.rstrip("/") + "/{key:path}", image_route.serve, methods=["GET", "HEAD"]),
        ]
    )
    app.state.gallery = gallery
    return app


__all__ = ["DEFAULT_BUCKET", "DEFAULT_IMAGE_PREFIX", "Gallery", "create_app", "list_session_images"]
