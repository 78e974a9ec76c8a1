"""Debian's nginx in front of gateways, for the tests: the shipped configuration
(``etc/nginx/availability/``) with the test's gateways and ports.

Everything here blocks; nginx runs in the foreground as a child process of
the test, with every file of its own in a folder of the test's, and is
stopped by its process id.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.helpers import unavailable
from tests.processes import ROOT, free_port, wait_until

SHIPPED = ROOT / "etc" / "nginx" / "availability"


def gateways_upstream(addresses: list[str]) -> str:
    """The shipped upstream file, its example ``server`` lines replaced by ``addresses``."""
    text = (SHIPPED / "gateways-upstream.conf").read_text()
    servers = re.findall(r"^ *server \S+ (.*);$", text, flags=re.MULTILINE)
    assert servers, "the shipped upstream lists its gateways"
    options = servers[0]
    kept = re.sub(r"^ *server \S+ .*;\n", "", text, flags=re.MULTILINE)
    lines = "".join(f"    server {address} {options};\n" for address in addresses)
    return kept.replace("    keepalive ", lines + "    keepalive ", 1)


class Nginx:
    """nginx listening on a loopback port, passing /gate/ to the given gateways."""

    def __init__(self, directory: Path, gateways: list[str]):
        executable = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(executable).exists():
            unavailable("nginx is not installed (apt-get install nginx-light)")
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "gateways-upstream.conf").write_text(gateways_upstream(gateways))
        self.config = directory / "nginx.conf"
        self.config.write_text(
            f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    include {directory}/gateways-upstream.conf;
    server {{
        listen 127.0.0.1:{self.port};
        location /gate/ {{
            include {SHIPPED}/gateways-proxy.conf;
        }}
    }}
}}
"""
        )

    def start(self) -> Nginx:
        check = subprocess.run(
            [self.executable, "-t", "-c", str(self.config), "-p", str(self.directory)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            [self.executable, "-c", str(self.config), "-p", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening)
        return self

    def _listening(self) -> bool:
        assert self.process.poll() is None, self.error_log()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""
