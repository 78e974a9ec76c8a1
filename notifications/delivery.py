"""The way out of the daemon: outbox, publisher and dispatcher under one service.

A gate call hands its notifications to the :class:`~.dispatcher.Dispatcher`,
which stores them in the :class:`~.outbox.Outbox` and publishes them through
the :class:`~.publisher.Publisher`. :class:`DeliveryService` owns the three
and is the only thing that starts and stops them, in this order:

- start: the outbox (its lock, its databases, its thread), the publisher
  (the broker connection, in the background), the dispatcher (replaying
  what the outbox holds, its periodic chores);
- stop: the dispatcher drains (the calls in progress finish, the outbox is
  published for at most ``drain_timeout`` seconds), the publisher closes
  the connection, the confirms that came meanwhile are removed from the
  outbox, and the outbox closes.

Nothing is started when the service is made (``makeService`` runs before
twistd forks, and a thread or a connection made then would not survive the
fork): ``startService`` does it, in the daemon's own process.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application import service
from twisted.internet import defer

from .archive import ArchiveDeclarer
from .config import Config
from .dispatcher import Dispatcher
from .outbox import Outbox
from .publisher import Publisher
from .subscriptions import QueuesDeclarer


class DeliveryService(service.MultiService):
    """Outbox, publisher and dispatcher, started in order and stopped in the reverse one."""

    def __init__(self, outbox: Outbox, publisher: Publisher, dispatcher: Dispatcher):
        super().__init__()
        self.outbox = outbox
        self.publisher = publisher
        self.dispatcher = dispatcher
        for child in (outbox, publisher, dispatcher):
            child.setServiceParent(self)

    def reconfigure(self, config: Config) -> None:
        """Apply what a reload may change here (the rest takes a restart)."""
        self.outbox.max_messages = config.max_messages
        self.outbox.dedup_window = config.dedup_window
        self.dispatcher.drain_timeout = config.drain_timeout

    @defer.inlineCallbacks
    def stopService(self):
        # Not MultiService's: it stops every child at once, and the drain
        # needs the publisher and the outbox until it is over.
        service.Service.stopService(self)
        yield self.dispatcher.stopService()
        yield self.publisher.stopService()
        yield self.dispatcher.flush()
        yield self.outbox.stopService()


def make_delivery(config: Config, reactor, deliveries: Path | None = None) -> DeliveryService:
    """The delivery service of a configuration; nothing is opened or connected yet.

    ``deliveries`` is the deliveries database shared by the workers of
    ``--workers`` (default: beside the outbox).
    """
    outbox = Outbox(
        config.storage_directory,
        reactor,
        synchronous=config.synchronous,
        max_messages=config.max_messages,
        max_bytes=config.max_bytes,
        dedup_window=config.dedup_window,
        deliveries=deliveries,
        shared_deliveries=deliveries is not None,
    )
    archive = ArchiveDeclarer(config.archive, config.broker.exchange)
    # The queues of the outgoing webhooks too: declared before anything is
    # published, so that none misses a notification at the very first start.
    declarers = [QueuesDeclarer(config.subscriptions, config.broker.exchange)]
    publisher = Publisher(config.broker, reactor, archive=archive, declarers=declarers)
    dispatcher = Dispatcher(outbox, publisher, reactor, drain_timeout=config.drain_timeout)
    return DeliveryService(outbox, publisher, dispatcher)
