"""The receiver a Python user would write instead of the gateway: FastAPI on uvicorn.

What it does for each GitHub call, no more: check ``X-Hub-Signature-256``
(HMAC-SHA256 of the raw body, compared in constant time), parse the JSON,
publish one persistent message on the topic exchange with the delivery id as
``message_id`` and a routing key of the gateway's shape
(``acme.<repository>.github.<event>``), and answer 200 once the broker has
confirmed it (publisher confirms). No rendering, no outbox, no deduplication
of redeliveries: this is the floor of "webhook in, message on RabbitMQ" in
Python, written the way the libraries' documentation shows it (one robust
connection and one confirming channel opened at start-up, ``await
exchange.publish``), on uvicorn with uvloop and httptools, one process.

Its packages are not the project's: ``benchmarks/bench/servers.py`` runs it
with the Python of a virtual environment of its own, built from
``benchmarks/fastapi-requirements.txt``.

    BENCH_SECRET=… python benchmarks/fastapi_receiver.py --port 8082 --exchange notifications
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
from contextlib import asynccontextmanager

import aio_pika
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse


def make_app(amqp_url: str, exchange_name: str, secret: bytes) -> FastAPI:
    """The application: ``POST /gate/GitHub/{door}`` and ``GET /status``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # uvicorn listens only once this has run: ready means connected.
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        app.state.exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        try:
            yield
        finally:
            await connection.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/status", response_class=PlainTextResponse)
    async def status() -> str:
        return "ALIVE"

    @app.post("/gate/GitHub/{door}")
    async def github(door: str, request: Request) -> dict:
        body = await request.body()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("x-hub-signature-256", ""), expected):
            raise HTTPException(403, "Unauthorized action.")
        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event or not delivery:
            raise HTTPException(400, "X-GitHub-Event and X-GitHub-Delivery are required.")
        try:
            payload = json.loads(body)
            repository = payload["repository"]["name"]
        except (ValueError, KeyError, TypeError) as error:
            raise HTTPException(400, "Bad request.") from error
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=delivery,
        )
        routing_key = f"{door}.{repository}.github.{event}".lower()
        # With publisher confirms, this returns once the broker has acked the message.
        await request.app.state.exchange.publish(message, routing_key=routing_key)
        return {"status": "published", "routing_key": routing_key}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--exchange", required=True)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    options = parser.parse_args()
    # From the environment: a secret on the command line shows in ps.
    secret = os.environ["BENCH_SECRET"].encode()
    app = make_app(options.amqp_url, options.exchange, secret)
    # One process, as one gateway process; uvicorn's defaults otherwise
    # (its access log included, as the gateway writes one line per call).
    uvicorn.run(
        app,
        host=options.interface,
        port=options.port,
        loop="uvloop",
        http="httptools",
        workers=1,
    )


if __name__ == "__main__":
    main()
