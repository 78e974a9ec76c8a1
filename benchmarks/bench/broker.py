"""The broker side of the driver, in a Twisted reactor thread of the script:
the count queue (declared, counted, purged, deleted through the project's own
txamqp connection), the purger of the memory run, and the loopback proxy the
outage scenario cuts."""

from __future__ import annotations

import contextlib
import threading

from notifications.config import BrokerConfig

from .base import BenchError, free_port


class Background:
    """A Twisted reactor in a thread of this script (AMQP admin, broker proxy)."""

    def __init__(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        self.thread.start()

    def call(self, function, *args):
        from twisted.internet import defer, threads

        def run():
            return defer.ensureDeferred(function(*args))

        return threads.blockingCallFromThread(self.reactor, run)

    def call_plain(self, function, *args):
        from twisted.internet import threads

        return threads.blockingCallFromThread(self.reactor, function, *args)

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(5)


class Broker:
    """Declares, counts, purges and deletes the benchmark's queue (txamqp)."""

    def __init__(self, background: Background, host: str, port: int):
        self.background = background
        self.host = host
        self.port = port

    def _config(self, exchange: str) -> BrokerConfig:
        return BrokerConfig(
            host=self.host, port=self.port, exchange=exchange, heartbeat=0, connect_timeout=5.0
        )

    def _session(self, exchange: str, work):
        from notifications.amqp.connection import connect

        async def session():
            reactor = self.background.reactor
            client, channel = await connect(reactor, self._config(exchange))
            try:
                return await work(channel)
            finally:
                with contextlib.suppress(Exception):
                    await client.close(within=2)

        try:
            return self.background.call(session)
        except Exception as error:
            raise BenchError(f"broker at {self.host}:{self.port}: {error!r}") from None

    def setup(self, exchange: str, queue: str) -> None:
        """The exchange (as the daemon declares it) and a queue bound with ``#``."""

        async def work(channel):
            await channel.queue_declare(
                queue=queue, durable=False, exclusive=False, auto_delete=False
            )
            await channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")

        self._session(exchange, work)

    def count(self, exchange: str, queue: str) -> int:
        async def work(channel):
            declared = await channel.queue_declare(queue=queue, passive=True)
            return declared.message_count

        return self._session(exchange, work)

    def purge(self, exchange: str, queue: str) -> int:
        async def work(channel):
            purged = await channel.queue_purge(queue=queue)
            return purged.message_count

        return self._session(exchange, work)

    def teardown(self, exchange: str, queue: str) -> None:
        """The queue, the daemon's archive stream (it keeps its data on the broker's
        disk until deleted) and the exchange."""

        async def work(channel):
            await channel.queue_delete(queue=queue)
            await channel.queue_delete(queue=f"{exchange}.archive")
            await channel.exchange_delete(exchange=exchange)

        with contextlib.suppress(BenchError):
            self._session(exchange, work)


class Proxy:
    """A loopback TCP forwarder to the broker that can be cut and restored.

    ``reset``: the listening port closes and every connection is aborted, so
    the daemon sees the broker go away at once and its reconnections are
    refused (a broker down or restarting). ``blackhole``: connections stay
    open and new ones are accepted, but nothing is forwarded either way (a
    network partition: the daemon notices through missed heartbeats).
    """

    def __init__(self, background: Background, host: str, port: int):
        self.background = background
        self.target = (host, port)
        self.port = free_port()
        self.listening = None
        self.held = False
        self.pipes: set = set()
        self.connections = 0

    def _factory(self):
        from twisted.internet import protocol

        proxy = self

        class Pipe(protocol.Protocol):
            peer: Pipe | None = None

            def connectionMade(self):
                proxy.pipes.add(self)
                if proxy.held:
                    self.transport.pauseProducing()

            def dataReceived(self, data):
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.write(data)

            def connectionLost(self, reason):
                proxy.pipes.discard(self)
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.loseConnection()

        class Server(Pipe):
            def connectionMade(self):
                super().connectionMade()
                proxy.connections += 1
                self.transport.pauseProducing()
                client = protocol.ClientCreator(proxy.background.reactor, Pipe)
                d = client.connectTCP(*proxy.target, timeout=5)
                d.addCallbacks(self.linked, lambda _: self.transport.abortConnection())

            def linked(self, other):
                self.peer, other.peer = other, self
                if self.transport.disconnected:
                    other.transport.loseConnection()
                elif not proxy.held:
                    self.transport.resumeProducing()

        factory = protocol.Factory()
        factory.protocol = Server
        return factory

    def start(self) -> int:
        def listen():
            reactor = self.background.reactor
            self.listening = reactor.listenTCP(self.port, self._factory(), interface="127.0.0.1")

        self.background.call_plain(listen)
        return self.port

    def cut(self, how: str) -> None:
        def reset():
            d = self.listening.stopListening()
            self.listening = None
            for pipe in list(self.pipes):
                pipe.transport.abortConnection()
            return d

        def hold():
            self.held = True
            for pipe in list(self.pipes):
                pipe.transport.pauseProducing()

        self.background.call_plain(reset if how == "reset" else hold)

    def restore(self) -> None:
        def resume():
            if self.listening is None:
                reactor = self.background.reactor
                self.listening = reactor.listenTCP(
                    self.port, self._factory(), interface="127.0.0.1"
                )
            if self.held:
                self.held = False
                for pipe in list(self.pipes):
                    if pipe.peer is not None:
                        pipe.transport.resumeProducing()

        self.background.call_plain(resume)

    def stop(self) -> None:
        def close():
            if self.listening is not None:
                self.listening.stopListening()
            for pipe in list(self.pipes):
                pipe.transport.abortConnection()

        with contextlib.suppress(Exception):
            self.background.call_plain(close)


class Purger(threading.Thread):
    """Empties the count queue every ``interval`` seconds, adding up what it removed,
    so that a million messages do not pile up in RabbitMQ."""

    def __init__(self, broker: Broker, exchange: str, queue: str, interval: float):
        super().__init__(daemon=True)
        self.broker, self.exchange, self.queue, self.interval = broker, exchange, queue, interval
        self.purged = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.purged += self.broker.purge(self.exchange, self.queue)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.purged
