"""Run a node's gateway as its own process: ``python -m protocols.gateway --config gateway.yaml``.

The YAML file (:class:`GatewayConfig`) names the member, the listen address, the TLS credentials
(``dcp keys`` writes them beside the keystore), the registered member keys the handshake admits and
the open jobs with their route tables.  When the gateway is ready it prints one JSON line
``{"member", "listen": [host, port], "jobs": {job: {peer: {link: port}}}}`` on stdout; on SIGHUP it
re-reads the file, closes the jobs that left it, (re)opens the others and prints the line again;
SIGTERM / SIGINT stop it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from common.logging import configure_logging
from common.yamlfile import load_yaml_model
from protocols.gateway.gateway import Gateway, GatewayError
from protocols.gateway.models import PeerRoute, SM2Key
from protocols.gmtls.certs import CertificateError, load_credentials


class ConfigError(Exception):
    """The gateway's configuration file is unusable."""


class JobRoutes(BaseModel):
    """One job's route table: this member's engine links, its peers, optionally fixed dial ports."""

    local_ports: dict[str, int]
    peers: dict[str, PeerRoute]
    dial_ports: dict[str, dict[str, int]] | None = None


class GatewayConfig(BaseModel):
    """Everything a gateway process needs (no value in it comes from a peer's request)."""

    member: str
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(ge=0, lt=65536)
    cert: Path
    key: Path
    members: dict[str, SM2Key]  # registered member keys, name -> 64-byte SM2 key (hex in the file)
    jobs: dict[str, JobRoutes] = Field(default_factory=dict)


def _apply(gateway: Gateway, config: GatewayConfig,
           opened: dict[str, tuple[JobRoutes, dict[str, dict[str, int]]]]) -> dict[str, Any]:
    """Make the gateway's jobs those of ``config``: close the ones that left it, open the new or changed
    ones; an unchanged job keeps its routes and its live connections."""
    for job in [j for j in opened if j not in config.jobs]:
        gateway.close_job(job)
        del opened[job]
    for job, table in config.jobs.items():
        if job in opened and opened[job][0] == table:
            continue
        opened[job] = (table, gateway.open_job(job, table.local_ports, table.peers, dial_ports=table.dial_ports))
    return {"member": config.member, "listen": list(gateway.address),
            "jobs": {job: routes for job, (_, routes) in opened.items()}}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process's exit status."""
    parser = argparse.ArgumentParser(prog="python -m protocols.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the gateway's YAML configuration")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_yaml_model(args.config, GatewayConfig, ConfigError)
        creds = load_credentials(config.cert, config.key)
    except (ConfigError, CertificateError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    keys = set(config.members.values())
    gateway = Gateway(config.listen_host, config.listen_port, creds, lambda k: k in keys, member=config.member)
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    opened: dict[str, tuple[JobRoutes, dict[str, dict[str, int]]]] = {}
    try:
        gateway.start()
        print(json.dumps(_apply(gateway, config, opened)), flush=True)
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                try:
                    config = load_yaml_model(args.config, GatewayConfig, ConfigError)
                    keys.clear()
                    keys.update(config.members.values())
                    print(json.dumps(_apply(gateway, config, opened)), flush=True)
                except (ConfigError, GatewayError) as exc:
                    print(f"gateway: reload refused: {exc}", file=sys.stderr, flush=True)
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
