"""``python -m coordinator --config coordinator.yaml``: run the coordinator service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run uvicorn on the configured loopback address until stopped."""
    import uvicorn

    from common.logging import configure_logging
    from coordinator.app import create_app
    from coordinator.errors import CoordinatorError
    from coordinator.settings import load_coordinator_settings

    ap = argparse.ArgumentParser(prog="python -m coordinator")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args(argv)
    configure_logging("INFO")
    try:
        settings = load_coordinator_settings(args.config)
        app = create_app(settings)
    except CoordinatorError as exc:
        print(f"{exc.name}: {exc.detail}", file=sys.stderr)
        return 2
    if settings.tls is None:
        print(f"coordinator on http://{settings.host}:{settings.port}", flush=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        return 0
    from protocols.gmtls.context import server_context
    from protocols.gmtls.server import serve

    # 国密 TLS only: a client is accepted iff its proven SM2 key is an active member's in the Registry
    try:
        directory = app.state.coord.key_directory()
        ctx = server_context(settings.tls.credentials(), directory.is_known)
    except (OSError, ValueError) as exc:  # CertificateError is a ValueError
        print(f"tls: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    directory.keep_fresh()
    print(f"coordinator on https://{settings.host}:{settings.port} (国密 TLS: TLS_SM4_GCM_SM3, curveSM2, "
          f"sm2sig_sm3; client certificate required)", flush=True)
    serve(app, settings.host, settings.port, ctx, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
