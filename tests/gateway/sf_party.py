"""One SecretFlow party (production mode: ``sf.init(address="local", cluster_config=…)``) whose engine
links all go through the gateways, for the gateway tests.

``python -m tests.gateway.sf_party ME ADDRESSES_JSON``: ADDRESSES_JSON is :func:`protocols.gateway.addresses`
of this party — ``{party: {"sf": "127.0.0.1:p", "spu": "127.0.0.1:q"}}``, its own links where it listens
and the peer's at its gateway's route ports.  alice holds x, bob holds y; the SPU computes x·y and
both learn it.  Prints one JSON line.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    me, view = sys.argv[1], json.loads(sys.argv[2])
    import numpy as np
    import secretflow as sf

    parties = sorted(view)
    cluster_config = {
        "parties": {p: {"address": view[p]["sf"], "listen_addr": view[p]["sf"]} for p in parties},
        "self_party": me,
    }
    sf.init(address="local", cluster_config=cluster_config, ray_mode=False, logging_level="warning",
            cross_silo_comm_backend="grpc",
            cross_silo_comm_options={"timeout_in_ms": 120_000, "exit_on_sending_failure": True},
            enable_waiting_for_other_parties_ready=True)
    try:
        alice, bob = sf.PYU("alice"), sf.PYU("bob")
        spu = sf.SPU({"nodes": [{"party": p, "address": view[p]["spu"], "listen_address": view[p]["spu"]}
                                for p in parties],
                      "runtime_config": {"protocol": "SEMI2K", "field": "FM64"}},
                     link_desc={"connect_retry_times": 600, "connect_retry_interval_ms": 100,
                                "recv_timeout_ms": 120_000})
        x = alice(lambda: np.arange(1.0, 201.0))()
        y = bob(lambda: np.full(200, 0.5))()
        z = spu(lambda a, b: a @ b)(x.to(spu), y.to(spu))
        pyu_sum = alice(lambda a: float(a.sum()))(x).to(bob)
        print(json.dumps({"me": me, "dot": float(sf.reveal(z)), "sum_at_bob": float(sf.reveal(pyu_sum))}),
              flush=True)
    finally:
        sf.shutdown()


if __name__ == "__main__":
    main()
