"""Clean up the PSI library's trace files.

SecretFlow's PSI (libpsi) writes a perfetto trace per PSI run to the hard-coded
path ``/tmp/psi_<random>.trace``; nothing configurable through SecretFlow moves or
disables it. The trace embeds the command line of the process that wrote it, so a
party (or the runner, for a party it had to kill) removes exactly the traces whose
command line names its own config file, and nobody else's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

TRACE_DIR = Path("/tmp")
TRACE_GLOB = "psi_*.trace"


def remove_psi_traces(marker: str, trace_dir: Path = TRACE_DIR, max_bytes: int = 1 << 16) -> int:
    """Delete PSI trace files whose first ``max_bytes`` contain ``marker``; return how many."""
    needle = marker.encode()
    if not needle:
        return 0
    removed = 0
    for path in trace_dir.glob(TRACE_GLOB):
        try:
            with path.open("rb") as f:
                head = f.read(max_bytes)
        except OSError:
            continue
        if needle in head:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
