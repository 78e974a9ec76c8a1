# syntax=docker/dockerfile:1
#
# Notifications center: the daemon in a container.
#
#   docker build -t notifications .
#   docker run -d --name notifications -p 8080:8080 \
#       -e BROKER_HOST=rabbitmq.internal -e BROKER_USERNAME=notifications -e BROKER_PASSWORD=… \
#       -v notifications-outbox:/var/lib/notifications \
#       -v /srv/notifications/etc:/etc/notifications:ro \
#       notifications
#   docker exec notifications notifications config show
#
# /etc/notifications: the configuration, etc/docker/notifications.toml with the
# example files of etc/ until you mount your own (readable by uid/gid 10001).
# /var/lib/notifications: the outbox (outbox.sqlite3), a volume.

FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py setup.cfg README.rst ./
COPY notifications/ notifications/
COPY twisted/plugins/notifications_plugin.py twisted/plugins/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NOTIFICATIONS_CONFIG=/etc/notifications/notifications.toml

RUN groupadd --system --gid 10001 notifications \
 && useradd --system --uid 10001 --gid notifications --no-create-home \
        --home-dir /var/lib/notifications --shell /usr/sbin/nologin notifications \
 && install -d -o notifications -g notifications -m 0750 /var/lib/notifications

# pip install of the project (its wheel, built above) and its dependencies;
# then Twisted's plugin cache is written once, as root: the daemon cannot.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install /wheels/*.whl \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

COPY etc/docker/notifications.toml /etc/notifications/notifications.toml
COPY etc/credentials.json etc/dockerhub-tokens.json /etc/notifications/
COPY etc/analyzers/ /etc/notifications/analyzers/

# Numeric, so that runtimes can check it is not root (Kubernetes runAsNonRoot).
USER 10001:10001
WORKDIR /var/lib/notifications
VOLUME ["/var/lib/notifications"]
EXPOSE 8080

# /status is the liveness probe: ALIVE while the daemon serves, broker or not
# (a broker outage is not a reason to restart it: calls wait in the outbox).
# /health tells the broker state. There is no curl in the slim image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/status', timeout=4).read() != b'ALIVE')"]

# SIGTERM: the port closes, calls in progress finish, the outbox is drained for
# `[storage] drain_timeout` seconds (8 here, under docker stop's 10 s).
STOPSIGNAL SIGTERM
# --pidfile= (empty): no twistd.pid, whose leftover would stop the next start
# (in a container the daemon is always pid 1, "already running").
CMD ["twistd", "--nodaemon", "--pidfile=", "notifications", "--port", "tcp:8080", "--config", "/etc/notifications/notifications.toml"]
