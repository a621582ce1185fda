"""Named refusals of the researcher sandbox: one exception per way approved code can be stopped.

Every refusal is a :class:`SandboxError` with a stable ``code`` (what an engine wrapper records in a
task's status and the researcher reads in the rejection), so callers never parse messages.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every sandbox refusal."""

    code = "sandbox_error"


class SandboxUnavailable(SandboxError):
    """The isolation tools (bubblewrap, prlimit) are missing: nothing was run."""

    code = "sandbox_unavailable"


class CodeHashMismatch(SandboxError):
    """The code's SM3 differs from the approved hash: it was changed after approval and never ran."""

    code = "code_hash_mismatch"


class SandboxTimeout(SandboxError):
    """The run went past its wall-clock limit and was killed."""

    code = "timeout"


class SandboxCpuExceeded(SandboxTimeout):
    """The run used up its CPU-time limit (the kernel stopped it)."""

    code = "cpu_time_exceeded"


class SandboxMemoryExceeded(SandboxError):
    """The code asked for more memory (address space) than its limit."""

    code = "memory_exceeded"


class SandboxProcessLimit(SandboxError):
    """The code tried to start more processes or threads than its limit (e.g. a fork bomb)."""

    code = "process_limit"


class SandboxNetworkDenied(SandboxError):
    """The code tried to use the network (there is none in the sandbox)."""

    code = "network_denied"


class SandboxFileDenied(SandboxError):
    """The code tried to read a file outside its mounts (node database, keystore, anything else)."""

    code = "file_denied"


class SandboxWriteDenied(SandboxError):
    """The code tried to write somewhere other than its output directory (e.g. the input data)."""

    code = "write_denied"


class SandboxOutputRefused(SandboxError):
    """The output is too large or breaks the output policy (row-level data, small groups, IDs)."""

    code = "output_refused"


class SandboxCodeFailed(SandboxError):
    """The code itself raised an ordinary error (a bug, not an escape attempt)."""

    code = "code_failed"
