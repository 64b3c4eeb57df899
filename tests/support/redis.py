"""A Redis server of the test's own, as the deployment guide runs one: TLS only, with a password."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import redis

PASSWORD = "broker-password-of-the-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class ThrowawayRedis:
    """`redis-server` on a free port that accepts TLS connections only (a certificate of a CA made for the
    test) and commands only after AUTH with PASSWORD."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        """Why it cannot run here, or None."""
        for program in ("redis-server", "openssl"):
            if shutil.which(program) is None:
                return f"{program} is not installed"
        return None

    def url(self, password: str = PASSWORD) -> str:
        query = urlencode({"ssl_ca_certs": str(self.folder / "ca.crt"), "ssl_cert_reqs": "required"})
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?{query}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._certificates()
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key", "--tls-ca-cert-file", "ca.crt",
                "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            cwd=self.folder,
            stdout=(self.folder / "redis.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")
                time.sleep(0.1)

    def client(self) -> redis.Redis:
        return redis.from_url(self.url())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _certificates(self) -> None:
        days = ("-days", "2")
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", *days,
                "-subj", "/CN=resilient test CA", cwd=self.folder)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr",
                "-subj", "/CN=127.0.0.1", cwd=self.folder)
        (self.folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "redis.crt", *days, "-extfile", "san.ext", cwd=self.folder)
