"""Assembles services on one gRPC server: the embedded stack of `neuronmap up`, or one service per process.

Each service package exposes `add_to_server(server, settings) -> Service`, where Service has `close()`.
The server also answers gRPC health checking (overall and per service) and server reflection.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from neuronmap.client import SERVICE_NAMES, channel_options
from neuronmap.errors import FailedPrecondition
from neuronmap.settings import Settings

log = logging.getLogger(__name__)

SERVICES = ("catalog", "extractor", "analyzer")
_PACKAGES = {
    "catalog": ("neuronmap_catalog.service", "neuronmap[catalog]"),
    "extractor": ("neuronmap_extractor.service", "neuronmap[extractor]"),
    "analyzer": ("neuronmap_analyzer.service", "neuronmap[analyzer]"),
}


class Service(Protocol):
    def close(self) -> None: ...


@dataclass
class RunningServer:
    """A started server; `target` is the address it answers on."""

    server: grpc.Server
    target: str
    settings: Settings
    services: dict[str, Service] = field(default_factory=dict)
    health: health.HealthServicer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for service in self.services.values():
            service.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


def serve(
    settings: Settings,
    services: tuple[str, ...] = SERVICES,
    host: str = "127.0.0.1",
    port: int = 50051,
    workers: int = 32,
) -> RunningServer:
    """Binds host:port (0 picks a free port), adds the services, starts serving."""
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise FailedPrecondition(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
    if "catalog" not in services and not settings.catalog_target:
        # The extractor and analyzer index their work in the catalog: without one here, they need its address.
        raise FailedPrecondition(
            "without the catalog in this process, set NEURONMAP_CATALOG_TARGET to its address"
        )
    # gRPC shares ports (SO_REUSEPORT) by default: a second stack on a busy port would split the traffic.
    options = [*channel_options(settings), ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise FailedPrecondition(f"cannot listen on {host}:{port} (in use?)")
    target = f"{host}:{bound}"
    # Services in this process reach each other through this server unless told otherwise.
    settings = dataclasses.replace(settings, target=target)
    running = RunningServer(server=server, target=target, settings=settings)
    try:
        for name in services:
            module_name, extra = _PACKAGES[name]
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise FailedPrecondition(
                    f"the {name} service needs `pip install '{extra}'` ({error})"
                ) from error
            running.services[name] = module.add_to_server(server, settings)
    except BaseException:
        for service in running.services.values():
            service.close()
        raise
    running.health = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(running.health, server)
    names = [SERVICE_NAMES[s] for s in services]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    server.start()
    for name in ["", *names]:
        running.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s", ", ".join(services), target)
    return running
