"""Wake-ups across replicas: one pub/sub connection per process for every waiter.

A replica that ends a render lease or frees a provider slot publishes on a channel
(``prefix:done:{key}``, ``prefix:slots:free``); every process subscribes once, by
pattern, and wakes the waiters of that channel in it. Waiters never rely on it alone:
each also polls on a bounded interval, so a message lost while the subscription was
being re-established costs one interval, not a hang.

The subscription goes through ``Valkey.run`` like every other use, so a broken
connection counts as Valkey not answering (one log line, the gauge) and a successful
resubscription as Valkey answering again, even with no calls in flight. While it is
down, every waiter is woken at once to find that out and carry on per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

from imagegen_runtime.valkey import CoordinationUnavailable, Valkey

log = logging.getLogger(__name__)


class Wakeups:
    """retry_interval: how long to leave a failed subscription before trying again;
    idle_timeout: how long one read of the subscription waits for a message."""

    def __init__(
        self, valkey: Valkey, patterns: Sequence[str], *, retry_interval: float, idle_timeout: float = 5.0
    ) -> None:
        self._valkey = valkey
        self._patterns = tuple(patterns)
        self._retry_interval = retry_interval
        self._idle_timeout = idle_timeout
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while the subscription is live

    def start(self) -> None:
        """Start listening (once; needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="valkey-wakeups")

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[asyncio.Event]:
        """An event set when channel is published on (or the subscription breaks) while
        the block runs. Enter it before looking at what the message would announce,
        so that a message sent in between is not missed."""
        self.start()
        event = asyncio.Event()
        watchers = self._watchers.setdefault(channel, set())
        watchers.add(event)
        try:
            yield event
        finally:
            watchers.discard(event)
            if not watchers:
                self._watchers.pop(channel, None)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        complained = False  # one line for a failure Valkey.run does not report, until it works again
        while True:
            pubsub = self._valkey.client.pubsub(ignore_subscribe_messages=True)
            try:
                await self._valkey.run(lambda _, pubsub=pubsub: pubsub.psubscribe(*self._patterns))
                self.subscribed.set()
                complained = False
                while True:
                    message = await self._valkey.run(
                        lambda _, pubsub=pubsub: pubsub.get_message(ignore_subscribe_messages=True, timeout=self._idle_timeout)
                    )
                    if message is not None:
                        self._wake(message["channel"])
            except CoordinationUnavailable:
                pass  # logged once by Valkey; waiters poll, and are woken below to find out
            except Exception:
                if not complained:
                    complained = True
                    log.warning("coordination: the wake-up subscription failed; waiters poll", exc_info=True)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            self._wake_all()
            await asyncio.sleep(self._retry_interval)  # back-off before resubscribing

    def _wake(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        for event in self._watchers.get(name, ()):
            event.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()
