{#- Notifications center: installs the daemon in a virtual environment,
    manages its configuration from pillar data (configuration as code) and
    runs it under systemd with socket activation.

    Pillar: see ../pillar.example.sls. Needs Python 3.11 or later (`python`).
    A configuration change is checked with `notifications config validate`
    before the daemon is restarted: a configuration that does not validate
    leaves the running daemon alone and fails this state. -#}
{%- from "notifications/map.jinja" import notifications as n with context %}
{%- set venv = n.prefix %}
{%- set conf = n.config_dir %}
{%- set marker = venv ~ '/.notifications-installed' %}
{%- set method = n.install.method %}
{#- The (file) states whose changes are checked by `config validate` and
    restart the daemon. #}
{%- set configuration = [
      'notifications-config',
      'notifications-credentials',
      'notifications-dockerhub-tokens',
      'notifications-analyzers',
      'notifications-environment',
    ] %}

notifications-packages:
  pkg.installed:
    - pkgs: {{ n.packages | tojson }}

notifications-group:
  group.present:
    - name: {{ n.group }}
    - system: True

notifications-user:
  user.present:
    - name: {{ n.user }}
    - gid: {{ n.group }}
    - system: True
    - home: {{ n.state_dir }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: notifications-group

# The storage directory: the outbox (outbox.sqlite3). systemd's
# StateDirectory= creates it too; here so that `config validate` and a first
# start find it.
notifications-state-dir:
  file.directory:
    - name: {{ n.state_dir }}
    - user: {{ n.user }}
    - group: {{ n.group }}
    - mode: '0750'
    - require:
      - user: notifications-user

notifications-config-dir:
  file.directory:
    - name: {{ conf }}
    - user: root
    - group: {{ n.group }}
    - mode: '0750'
    - makedirs: True
    - require:
      - group: notifications-group

## Installation: a virtual environment, and the project in it.

notifications-venv:
  cmd.run:
    - name: {{ n.python }} -m venv {{ venv }}
    - creates: {{ venv }}/bin/python
    - require:
      - pkg: notifications-packages

{%- if method == 'git' %}
{%-   set source = n.install.git.target %}
{%-   set source_id = 'git -C ' ~ source ~ ' rev-parse HEAD' %}
{%-   set source_kind = 'git' %}

notifications-source:
  git.latest:
    - name: {{ n.install.git.url }}
    - rev: {{ n.install.git.rev }}
    - target: {{ source }}
    - force_reset: True
    - require:
      - pkg: notifications-packages
{%- elif method == 'wheel' %}
{%-   set source = venv ~ '/wheels/' ~ (n.install.wheel.source.split('/') | last) %}
{%-   set source_id = 'sha256sum ' ~ source ~ ' | cut -d " " -f 1' %}
{%-   set source_kind = 'file' %}

notifications-source:
  file.managed:
    - name: {{ source }}
    - source: {{ n.install.wheel.source }}
    - source_hash: {{ n.install.wheel.source_hash }}
    - makedirs: True
    - require:
      - cmd: notifications-venv
{%- else %}
{%-   set source = '' %}
{%-   set source_id = 'false' %}
{%-   set source_kind = 'test' %}

notifications-source:
  test.fail_without_changes:
    - name: "notifications:install:method must be git or wheel, not {{ method }}"
{%- endif %}

{%- set pip_target = (n.install.pip_args ~ ' ' ~ source) | trim %}

# pip install of the checkout or wheel (with its dependencies, then the project
# itself again: pip skips a wheel whose version is already installed), then
# Twisted's plugin cache, written as root since the daemon cannot. The marker
# holds the commit or the wheel's digest that was installed.
notifications-install:
  cmd.run:
    - name: >-
        {{ venv }}/bin/pip install --upgrade {{ pip_target }}
        && {{ venv }}/bin/pip install --force-reinstall --no-deps {{ pip_target }}
        && {{ venv }}/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
        && {{ source_id }} > {{ marker }}
    - unless: test -s {{ marker }} && test "$(cat {{ marker }})" = "$({{ source_id }})"
    - require:
      - cmd: notifications-venv
      - {{ source_kind }}: notifications-source

## Configuration: root:{{ n.group }}, 0640 (the secrets are in these files).

notifications-config:
  file.managed:
    - name: {{ conf }}/notifications.toml
    - source: salt://notifications/files/notifications.toml.jinja
    - template: jinja
    - user: root
    - group: {{ n.group }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: notifications-config-dir

notifications-credentials:
  file.serialize:
    - name: {{ conf }}/credentials.json
    - dataset: {{ n.credentials | tojson }}
    - serializer: json
    - user: root
    - group: {{ n.group }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: notifications-config-dir

notifications-dockerhub-tokens:
  file.serialize:
    - name: {{ conf }}/dockerhub-tokens.json
    - dataset: {{ n.dockerhub_tokens | tojson }}
    - serializer: json
    - user: root
    - group: {{ n.group }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: notifications-config-dir

{#- analyzers/<Service>/<door>.json (or default.json), one state each. #}
{%- set analyzer_states = [] %}
{%- for service, doors in n.analyzers | dictsort %}

notifications-analyzers-{{ service }}:
  file.directory:
    - name: {{ conf }}/analyzers/{{ service }}
    - user: root
    - group: {{ n.group }}
    - mode: '0750'
    - makedirs: True
    - require:
      - file: notifications-config-dir
{%-   set _ = analyzer_states.append('notifications-analyzers-' ~ service) %}
{%-   for door, analyzer in doors | dictsort %}
{%-     set id = 'notifications-analyzer-' ~ service ~ '-' ~ door %}
{%-     set _ = analyzer_states.append(id) %}
{%-     set _ = configuration.append(id) %}

{{ id }}:
  file.serialize:
    - name: {{ conf }}/analyzers/{{ service }}/{{ door }}.json
    - dataset: {{ analyzer | tojson }}
    - serializer: json
    - user: root
    - group: {{ n.group }}
    - mode: '0640'
    - require:
      - file: notifications-analyzers-{{ service }}
{%-   endfor %}
{%- endfor %}

# The analyzers directory holds the pillar's analyzers and nothing else.
notifications-analyzers:
  file.directory:
    - name: {{ conf }}/analyzers
    - user: root
    - group: {{ n.group }}
    - mode: '0750'
    - clean: True
    - require:
      - file: notifications-config-dir
{%- for id in analyzer_states %}
      - file: {{ id }}
{%- endfor %}

{%- if n.environment %}

# BROKER_* overrides, read by systemd (EnvironmentFile=).
notifications-environment:
  file.managed:
    - name: {{ conf }}/environment
    - source: salt://notifications/files/environment.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - file: notifications-config-dir
{%- else %}

notifications-environment:
  file.absent:
    - name: {{ conf }}/environment
{%- endif %}

## The check: every file of the configuration, read as the daemon's user.

notifications-validate:
  cmd.run:
    - name: >-
        runuser -u {{ n.user }} --
        {{ venv }}/bin/notifications --config {{ conf }}/notifications.toml config validate
    - env: {{ n.environment | tojson }}
    - require:
      - user: notifications-user
      - file: notifications-state-dir
    - onchanges:
      - cmd: notifications-install
{%- for id in configuration %}
      - file: {{ id }}
{%- endfor %}

## systemd: the socket (enabled) and the service (enabled too, so that it
## starts at boot and replays the outbox without waiting for a first call).

notifications-socket-unit:
  file.managed:
    - name: {{ n.unit_dir }}/notifications.socket
    - source: salt://notifications/files/notifications.socket.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'

notifications-service-unit:
  file.managed:
    - name: {{ n.unit_dir }}/notifications.service
    - source: salt://notifications/files/notifications.service.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'

notifications-daemon-reload:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: notifications-socket-unit
      - file: notifications-service-unit

notifications-socket:
  service.running:
    - name: notifications.socket
    - enable: True
    - require:
      - cmd: notifications-daemon-reload
    - watch:
      - file: notifications-socket-unit

# Restarted (SIGTERM: drain, then exit) when the program or its configuration
# changed, and only once `config validate` passed: systemd keeps the socket
# open meanwhile, so calls wait for the new daemon instead of being refused.
notifications-service:
  service.running:
    - name: notifications.service
    - enable: True
    - require:
      - service: notifications-socket
      - cmd: notifications-validate
      - file: notifications-state-dir
    - watch:
      - cmd: notifications-install
      - file: notifications-service-unit
{%- for id in configuration %}
      - file: {{ id }}
{%- endfor %}
