"""The session gallery in a real headless Chromium (Debian's chromium, driven by
Playwright): open a session page, submit a prompt, watch the stages and the execution's
state, the preview in place, then the image loaded from its proxy_url, which the image
route serves from the real executor. The executor renders with the offline renderer,
held at the start of each render until the test lets it go (so the page is watching
when the preview comes).

Screenshots of each run are kept in var/test-artifacts/ (ignored by git): gallery-preview.png
while the first image is painted, gallery-stages.png after it, gallery.png of the listing,
gallery-listed.png of images another client stored."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from clients import AsyncImagegenClient
from clients.web import create_app
from clients.web.server import WebServer
from executor_service.executor import Executor
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.ports import StoredObject
from executor_service.stores.local_store import LocalObjectStore
from imagegen import catalogue
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.executor_server import HeldProvider, running_executor
from tests.support.s3_server import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


class HeldStore(LocalObjectStore):
    """The local store, each write waiting for release (set: none waits): the preview
    stays on the page, the image not stored yet, while the test looks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "imagegen")
        self.release = asyncio.Event()
        self.release.set()

    async def put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        await self.release.wait()
        return await super().put(key, data, content_type, metadata)


@dataclass
class Site:
    url: str
    store: Path
    planner: str  # the services' addresses, for another client than the web app's
    executor: str
    provider: HeldProvider  # the offline renderer, held until provider.release is set
    held_store: HeldStore  # writes wait while its release is clear


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """Both services and the web app, the executor's proxy_url pointing at the app."""
    (port,) = free_ports(1)
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
    store = HeldStore(tmp_path / "store")
    store.ensure_ready()
    provider = HeldProvider(inner=OfflineRenderer(), hold=True)
    async with running_executor(Executor(provider, store, f"http://127.0.0.1:{port}/images")) as executor:
        client = AsyncImagegenClient(f"127.0.0.1:{planner.port}", executor)
        web = await WebServer(create_app(client), "127.0.0.1", port).start()
        try:
            yield Site(web.url, tmp_path / "store", f"127.0.0.1:{planner.port}", executor, provider, store)
        finally:
            provider.release.set()
            store.release.set()
            await web.stop()
            await client.close()
            await planner.stop(None)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it (apt-get install chromium)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def test_a_prompt_shows_its_stages_then_its_image_from_proxy_url(site: Site, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 820})
    await page.goto(f"{site.url}/sessions/table-1")
    assert await page.text_content("#session-id") == "table-1"
    assert await page.is_visible("#empty")
    choices = await page.eval_on_selector_all("#image-type option", "options => options.map(o => o.value)")
    assert choices == ["", *catalogue.IMAGE_TYPE_NAMES]

    await page.fill("#prompt", "A rusty longsword on a tavern table")
    await page.select_option("#image-type", "item")
    await page.click("#submit")
    # The execution has started and the page watches it: its place in the gallery is taken.
    await page.wait_for_selector('#stages li[data-stage="RENDERING"]', timeout=30_000)
    assert await page.text_content("#status") == "running"
    assert await page.is_visible("#gallery figure.pending .painting")
    site.held_store.release.clear()  # rendered, previewed, then held before it is stored
    site.provider.release.set()
    await page.wait_for_function(
        "() => { const p = document.querySelector('#gallery figure.pending img.preview');"
        " return p && !p.hidden && p.complete && p.naturalWidth > 0; }", timeout=30_000,
    )  # fmt: skip
    preview = await page.get_attribute("#gallery figure img.preview", "src")
    assert preview.startswith("data:image/webp;base64,")
    # The offline renderer reports its render half done after the preview: on the stage, once.
    await page.wait_for_selector('#stages li[data-stage="RENDERING"][data-progress="50"]', timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_selector('#stages li[data-stage="STORING"]', timeout=30_000)
    assert not await page.is_visible("#gallery figure.pending .painting")
    await page.screenshot(path=str(ARTIFACTS / "gallery-preview.png"), full_page=True)  # the preview in place
    site.held_store.release.set()
    await page.wait_for_selector('#stages li[data-stage="COMPLETED"]', timeout=30_000)
    stages = await page.eval_on_selector_all("#stages li", "items => items.map(i => i.dataset.stage)")
    assert stages == ["PLANNING", "PLANNED", "ACCEPTED", "RENDERING", "PREVIEW", "STORING", "COMPLETED"]
    assert await page.text_content("#status") == "succeeded"

    await page.wait_for_function(
        "() => { const img = document.querySelector('#gallery figure img.image');"
        " return img && img.complete && img.naturalWidth > 0; }", timeout=30_000,
    )  # fmt: skip
    src = await page.get_attribute("#gallery figure img.image", "src")
    # The preview made way for the image, in the same figure; nothing is pending.
    assert await page.get_attribute("#gallery figure img.preview", "src") == preview
    assert not await page.is_visible("#gallery figure img.preview")
    assert await page.eval_on_selector_all("#gallery figure.pending", "figures => figures.length") == 0
    async with httpx.AsyncClient(trust_env=False) as http:
        listed = (await http.get(f"{site.url}/sessions/table-1/images")).json()["images"]
    assert [image["proxy_url"] for image in listed] == [src]
    assert src.startswith(f"{site.url}/images/table-1/item/") and src.endswith(".png")
    assert (site.store / src.removeprefix(f"{site.url}/images/")).is_file()
    assert await page.text_content("#gallery dd.type") == "item"
    assert await page.text_content("#gallery dd.provider") == "offline · offline-renderer-1"
    assert await page.text_content("#gallery dd.cost") == "—"  # no cost reported yet
    assert await page.text_content("#gallery .prompt") == "A rusty longsword on a tavern table"
    await page.screenshot(path=str(ARTIFACTS / "gallery-stages.png"), full_page=True)  # the stages, then the image

    await page.fill("#prompt", "The party ambushes goblins on a rope bridge")
    await page.select_option("#image-type", "scene")
    await page.click("#submit")
    await page.wait_for_selector('#stages li[data-stage="COMPLETED"]', timeout=30_000)
    await page.reload()  # the listing, newest first
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery figure img.image')].filter(i => i.complete && i.naturalWidth > 0).length == 2",
        timeout=30_000,
    )  # fmt: skip
    assert await page.eval_on_selector_all("#gallery dd.type", "cells => cells.map(c => c.textContent)") == ["scene", "item"]
    assert not await page.is_visible("#empty")

    screenshot = await page.screenshot(path=str(ARTIFACTS / "gallery.png"), full_page=True)
    assert screenshot[:4] == b"\x89PNG"


async def test_a_planning_failure_shows_as_a_failed_stage_with_the_reason(site: Site, browser: Browser) -> None:
    site.provider.release.set()
    page = await browser.new_page()
    await page.goto(f"{site.url}/sessions/table-2")
    await page.fill("#prompt", "   ")
    await page.click("#submit")
    await page.wait_for_selector('#stages li[data-stage="FAILED"]', timeout=30_000)
    stages = await page.eval_on_selector_all("#stages li", "items => items.map(i => i.dataset.stage)")
    assert stages == ["PLANNING", "FAILED"]
    assert "planning failed: INVALID_ARGUMENT INVALID_REQUEST" in await page.text_content("#failure")
    assert await page.is_visible("#empty")


async def test_images_another_client_stored_are_listed_with_their_prompt_and_style_until_deleted(
    site: Site, browser: Browser
) -> None:
    site.provider.release.set()
    # The game backend's own client, not the web app: the gallery knows them from ListImages alone.
    async with AsyncImagegenClient(site.planner, site.executor) as backend:
        portrait = await backend.generate(
            "Portrait of Thora, our dwarf cleric", session_id="table-5", image_type="portrait", style="ink-sketch"
        )
        scene = await backend.generate(
            "Thora holds the rope bridge against the goblins", session_id="table-5", image_type="scene",
            style="pixel-art",
        )  # fmt: skip
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(f"{site.url}/sessions/table-5")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery figure img.image')].filter(i => i.complete && i.naturalWidth > 0).length == 2",
            timeout=30_000,
        )  # fmt: skip
        cells = "cells => cells.map(c => c.textContent)"
        assert await page.eval_on_selector_all("#gallery dd.type", cells) == ["scene", "portrait"]  # newest first
        assert await page.eval_on_selector_all("#gallery dd.style", cells) == ["pixel-art", "ink-sketch"]
        prompts = await page.eval_on_selector_all("#gallery .prompt", cells)
        assert prompts == [scene.plan.enhanced_prompt, portrait.plan.enhanced_prompt]  # the original is not known
        assert "Thora" in prompts[1] and "goblins" in prompts[0]
        assert await page.eval_on_selector_all("#gallery dd.provider", cells) == ["offline · offline-renderer-1"] * 2
        assert await page.eval_on_selector_all("#gallery dd.cost", cells) == ["—", "—"]  # the offline renderer is free
        sources = await page.eval_on_selector_all("#gallery figure img.image", "images => images.map(i => i.src)")
        assert sources == [scene.result.proxy_url, portrait.result.proxy_url]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "gallery-listed.png"), full_page=True)

        await backend.executor.delete_image(portrait.result.storage_path)
        await page.reload()
        await page.wait_for_function("() => document.querySelectorAll('#gallery figure').length == 1", timeout=30_000)
        assert await page.eval_on_selector_all("#gallery dd.style", cells) == ["pixel-art"]
        await backend.executor.delete_image(scene.result.storage_path)
        await page.reload()
        await page.wait_for_selector("#empty", state="visible", timeout=30_000)
        assert await page.eval_on_selector_all("#gallery figure", "figures => figures.length") == 0


async def test_a_gallery_whose_executor_is_down_says_so(browser: Browser) -> None:
    (port, nobody) = free_ports(2)
    client = AsyncImagegenClient(f"127.0.0.1:{nobody}", f"127.0.0.1:{nobody}")  # nothing listens there
    web = await WebServer(create_app(client), "127.0.0.1", port).start()
    try:
        page = await browser.new_page()
        await page.goto(f"{web.url}/sessions/table-6")
        await page.wait_for_function("() => document.getElementById('empty').textContent.includes('cannot be listed')")
        assert await page.text_content("#empty") == "The images cannot be listed right now (UNAVAILABLE)."
        assert await page.is_visible("#empty")
    finally:
        await web.stop()
        await client.close()


async def test_an_image_started_elsewhere_in_the_session_is_painted_live(site: Site, browser: Browser) -> None:
    site.provider.release.set()
    page = await browser.new_page(viewport={"width": 1100, "height": 820})
    await page.goto(f"{site.url}/sessions/table-7")
    await page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=30_000)
    async with AsyncImagegenClient(site.planner, site.executor) as backend:  # the DM agent, say
        # The page's session watch is open once it hears something: probe the session until it does.
        probe = 0
        while not await page.evaluate("() => Number(document.body.dataset.heard || 0) > 0"):
            probe += 1
            assert probe <= 30, "the page never heard the session"
            await backend.generate(f"A probe, {probe}", session_id="table-7", image_type="item", wait=False)
            with contextlib.suppress(PlaywrightTimeout):
                await page.wait_for_function("() => Number(document.body.dataset.heard || 0) > 0", timeout=1_000)
        site.provider.release.clear()  # the next render waits: the page shows it being painted
        started = await backend.generate(
            "Thora holds the rope bridge against the goblins", session_id="table-7", image_type="scene", wait=False
        )
        pending = f'#gallery figure.pending[data-execution="{started.execution.name}"]'
        await page.wait_for_selector(f"{pending} .painting", state="visible", timeout=30_000)
        assert await page.text_content(f"{pending} .prompt") == started.plan.enhanced_prompt
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "gallery-live.png"), full_page=True)  # being painted
        site.provider.release.set()
        done = f'#gallery figure[data-plan-id="{started.plan.plan_id}"]'
        await page.wait_for_function(
            f"() => {{ const img = document.querySelector('{done} img.image');"
            " return img && img.complete && img.naturalWidth > 0; }", timeout=30_000,
        )  # fmt: skip
        got = await backend.executor.get_execution(started.execution.name)
    assert await page.get_attribute(f"{done} img.image", "src") == got.result.proxy_url
    # Its preview came through the session's events, and made way for the image.
    assert (await page.get_attribute(f"{done} img.preview", "src")).startswith("data:image/webp;base64,")
    assert not await page.is_visible(f"{done} img.preview")
    assert await page.text_content(f"{done} dd.type") == "scene"
    assert await page.eval_on_selector_all("#gallery figure.pending", "figures => figures.length") == 0
    await page.screenshot(path=str(ARTIFACTS / "gallery-live-done.png"), full_page=True)
