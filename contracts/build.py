"""Compile the Solidity sources with the pinned solcjs and manage the committed artifacts.

``python -m contracts.build`` recompiles ``contracts/src/**/*.sol`` (through ``compile.mjs``,
standard-JSON input, optimizer 200 runs, evmVersion prague) and rewrites
``contracts/artifacts/<Name>.json``; ``python -m contracts.build --check`` exits non-zero if the
committed artifacts differ from a fresh compile (the drift test does the same).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.errors import ArtifactDrift, ArtifactMissing, CompilerUnavailable

CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
COMPILE_SCRIPT = CONTRACTS_DIR / "compile.mjs"

#: Contracts a deployment consists of (the rest are test fixtures).
CORE_CONTRACTS: tuple[str, ...] = ("Registry", "Authorizations", "Receipts")


class Artifact(BaseModel):
    """A compiled contract: ABI, bytecode and how it was built."""

    model_config = ConfigDict(frozen=True)

    contractName: str
    sourceName: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployedBytecode: str
    solcVersion: str
    settings: dict[str, Any]
    sourceHashes: dict[str, str]


def compile_sources(node: str = "node") -> dict[str, Artifact]:
    """Compile every source now and return the artifacts by contract name.

    Raises :class:`CompilerUnavailable` if node or the npm ``solc`` package is missing, or the
    sources do not compile (the compiler's messages are in the exception).
    """
    node_bin = shutil.which(node)
    if node_bin is None:
        raise CompilerUnavailable(f"{node!r} not found on PATH; run scripts/bootstrap.sh")
    if not (CONTRACTS_DIR / "node_modules" / "solc").is_dir():
        raise CompilerUnavailable("npm package solc missing in contracts/node_modules; run scripts/bootstrap.sh")
    proc = subprocess.run(
        [node_bin, str(COMPILE_SCRIPT)], cwd=CONTRACTS_DIR, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise CompilerUnavailable(f"solc failed:\n{proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    return {
        name: Artifact(
            **c, solcVersion=out["solcVersion"], settings=out["settings"], sourceHashes=out["sources"]
        )
        for name, c in out["contracts"].items()
    }


def _render(artifact: Artifact) -> str:
    return json.dumps(artifact.model_dump(), indent=1, sort_keys=True) + "\n"


def write_artifacts(artifacts: dict[str, Artifact], directory: Path = ARTIFACTS_DIR) -> list[Path]:
    """Write one JSON file per contract, removing artifacts of contracts that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in sorted(artifacts.items()):
        path = directory / f"{name}.json"
        path.write_text(_render(artifact))
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.stem not in artifacts:
            stale.unlink()
    return written


def drift(artifacts: dict[str, Artifact], directory: Path = ARTIFACTS_DIR) -> list[str]:
    """Names of contracts whose committed artifact differs from ``artifacts`` (or is missing/extra)."""
    committed = {p.stem for p in directory.glob("*.json")}
    changed = sorted(committed ^ set(artifacts))
    for name, artifact in artifacts.items():
        path = directory / f"{name}.json"
        if path.exists() and path.read_text() != _render(artifact):
            changed.append(name)
    return sorted(set(changed))


def check_artifacts() -> None:
    """Recompile and raise :class:`ArtifactDrift` naming every contract whose artifact is stale."""
    changed = drift(compile_sources())
    if changed:
        raise ArtifactDrift(
            f"committed artifacts differ from the sources for {', '.join(changed)}; "
            "run `python -m contracts.build` and commit contracts/artifacts"
        )


@cache
def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract ``name``; :class:`ArtifactMissing` if there is none."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise ArtifactMissing(f"no artifact {path}; run `python -m contracts.build`")
    return Artifact.model_validate_json(path.read_text())


def all_artifacts() -> dict[str, Artifact]:
    """Every committed artifact by contract name."""
    return {p.stem: load_artifact(p.stem) for p in sorted(ARTIFACTS_DIR.glob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    """``python -m contracts.build [--check]``."""
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        try:
            check_artifacts()
        except ArtifactDrift as exc:
            print(exc, file=sys.stderr)
            return 1
        print("artifacts up to date")
        return 0
    for path in write_artifacts(compile_sources()):
        print(path.relative_to(CONTRACTS_DIR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
