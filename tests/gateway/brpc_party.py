"""One party of a two-party SPU link (yacl's brpc, as SecretFlow's SPU and PSI use it), for the gateway tests.

``python -m tests.gateway.brpc_party RANK LISTEN_PORT PEER_ADDRESS MARKER``: listens on 127.0.0.1:LISTEN_PORT,
dials the peer at PEER_ADDRESS (a gateway route port), exchanges 1 MiB of MARKER both ways and an
all_gather, and prints one JSON line with what it received.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time


def main() -> None:
    rank, listen, peer, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import spu.libspu.link as link

    desc = link.Desc()
    desc.id = "gateway-test"
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 250
    desc.recv_timeout_ms = 60_000
    hosts = {rank: f"127.0.0.1:{listen}", 1 - rank: peer}
    for r in (0, 1):
        desc.add_party(f"party{r}", hosts[r])
    t0 = time.monotonic()
    ctx = link.create_brpc(desc, rank)
    connected = time.monotonic() - t0
    payload = (marker * (1_048_576 // len(marker) + 1)).encode()[:1_048_576]
    if rank == 0:
        ctx.send(1, payload)
        got = ctx.recv(1)
    else:
        got = ctx.recv(0)
        ctx.send(0, got[::-1])
    gathered = ctx.all_gather(f"hello from {rank}")
    ctx.stop_link()
    print(json.dumps({"rank": rank, "connected_s": round(connected, 2), "got_len": len(got),
                      "got_sha": hashlib.sha256(got).hexdigest(),
                      "sent_sha": hashlib.sha256(payload).hexdigest(),
                      "reversed_sha": hashlib.sha256(payload[::-1]).hexdigest(),
                      "gathered": list(gathered)}), flush=True)


if __name__ == "__main__":
    main()
