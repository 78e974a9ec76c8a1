# Pillar of the `notifications` state (etc/salt/notifications/): every key is
# optional, the defaults are in notifications/map.jinja. The secrets below are
# placeholders: keep the real ones in an encrypted pillar (GPG renderer, Vault).
#
#   base:
#     'notifications*':
#       - notifications        # this file, as pillar/notifications.sls

notifications:
  install:
    # git: pip install of a checkout of `url` at `rev` (a tag, a branch, a commit);
    # wheel: pip install of a wheel (python -m build --wheel), from the Salt
    # file server or a URL.
    method: git
    git:
      url: https://git.example.org/ops/notifications.git
      rev: v0.1.0
      target: /opt/notifications-src
    wheel:
      source: salt://notifications/dist/notifications-0.1.0-py3-none-any.whl
      source_hash: sha256=0000000000000000000000000000000000000000000000000000000000000000
    # More pip options, e.g. an internal index: --index-url https://pypi.example.org/simple
    pip_args: ""

  # Python 3.11 or later (Debian 12, Ubuntu 24.04).
  python: /usr/bin/python3
  packages: [python3, python3-venv, git]
  prefix: /opt/notifications           # the virtual environment
  user: notifications
  group: notifications
  config_dir: /etc/notifications
  # The socket (ListenStream=): loopback, behind nginx (etc/nginx/notifications.conf).
  # "[::1]:8080" or "/run/notifications/notifications.sock" work too.
  listen: 127.0.0.1:8080

  # /etc/notifications/environment, read by systemd: overrides [broker].
  environment:
    BROKER_PASSWORD: change-me-broker-password

  # notifications.toml, section by section (README "Configuration"). The state
  # names the files below and the storage directory (/var/lib/notifications).
  config:
    broker:
      host: rabbitmq.example.org
      port: 5671
      username: notifications
      password: overridden-by-BROKER_PASSWORD
      vhost: /
      exchange: notifications
      tls: true
    gate:
      allow_unsigned: []
      publish_timeout: 2.0
      max_body_size: 26214400
    features:
      Gate: true
      GetConfig: true
      ActionsReport: true
    storage:
      synchronous: full
      drain_timeout: 10
    http:
      timeout: 10
    mailgun:
      key: key-change-me
    # Lists are arrays of tables ([[consumers]], [[subscriptions]]).
    consumers:
      - name: dashboard
        token: change-me-dashboard-events-token
        patterns: ["acme.#"]
    subscriptions:
      - name: chat-relay
        url: https://relay.acme.example/hooks/notifications
        patterns: ["acme.#"]
        secret: change-me-chat-relay-signing-secret

  # credentials.json: the older system's file, as data.
  credentials:
    services:
      - gate: GitHub
        door: Acme
        secret: change-me-github-webhook-secret
      - gate: Jenkins
        door: Acme
      - gate: DockerHub
        door: Acme
        secret: change-me-dockerhub-door-token
      - gate: Phabricator
        door: Acme
        instance: https://phabricator.acme.example
        secret: api-change-me-conduit-token

  # dockerhub-tokens.json: {"owner/repo": "trigger token"}.
  dockerhub_tokens:
    acme/widgets: change-me-trigger-token

  # analyzers/<Service>/<door>.json (else <Service>/default.json): as etc/analyzers/.
  analyzers:
    GitHub:
      Acme:
        administrativeGroup: orgz
        defaultGroup: acme
        map:
          - {group: docker, items: ["docker-*"]}
          - {group: ops, items: [infrastructure, "servers-*", notifications]}
      default:
        administrativeGroup: orgz
        defaultGroup: ""
        map: []
    Jenkins:
      Acme:
        defaultGroup: ci
        map:
          - {group: ops, items: ["deploy-*", test-prod-env]}
        notifyOnlyOnFailure: [test-prod-env]
    Phabricator:
      Acme:
        administrativeGroup: orgz
        defaultGroup: acme
        map:
          - {group: ops, items: [Servers, "Ops-sprint-*"], words: [outage, pkg audit]}
          - {group: docker, items: [Docker images], words: [docker]}
