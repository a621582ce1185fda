"""Fixtures for the node tests: a node app over a fresh SQLite file and realistic department data."""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.ids import id_check_char, random_uscc
from nodes.app import create_app
from nodes.services.audit import FileAnchor
from nodes.settings import NodeSettings
from tests.authkit import TEST_SCRYPT_N, officer_client, peer_entries


def make_tax_frame(n: int = 60, seed: int = 7) -> pd.DataFrame:
    """Tax-bureau style rows: USCC key, legal rep resident ID, name, VAT paid, grade, industry."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        body = f"{rng.choice(['330106', '110101'])}{rng.randint(1960, 1999)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
        rows.append(
            {
                "uscc": random_uscc(rng),
                "legal_rep_id": body + id_check_char(body),
                "company_name": f"Hangzhou Zhenxing Trading No.{1000 + i} Co Ltd",
                "vat_paid": round(rng.uniform(10_000, 900_000), 2),
                "employees": rng.randint(3, 400),
                "credit_grade": rng.choice(["A", "B", "C", "M"]),
                "industry": rng.choice(["manufacturing", "retail", "logistics"]),
            }
        )
    return pd.DataFrame(rows)


def csv_bytes(df: pd.DataFrame, encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode(encoding)


@contextmanager
def small_tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mnt`` (made if missing) with ``options`` (e.g. ``size=1m``), unmounted afterwards:
    a small disk of the test's own, to fill."""
    mnt.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {got.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    # inbox and policy tests file unsigned requests; signed ones: tests/security, ChainKit.publish
    return NodeSettings(name="tax", work_dir=tmp_path / "node", max_upload_bytes=256 * 1024,
                        peers=peer_entries(), officer_scrypt_n=TEST_SCRYPT_N, require_signed_requests=False)


@pytest.fixture
def anchor(tmp_path: Path) -> FileAnchor:
    return FileAnchor(tmp_path / "anchors.jsonl")


@pytest.fixture
def client(settings: NodeSettings, anchor: FileAnchor) -> Iterator[TestClient]:
    """The tax node in process: calls come from the coordinator's TLS key and officer alice; bob
    confirms alice's four-eyes proposals."""
    app = create_app(settings, anchor=anchor)
    with officer_client(app) as c:
        yield c


@pytest.fixture
def tax_frame() -> pd.DataFrame:
    return make_tax_frame()


def upload(client: TestClient, name: str, data: bytes, filename: str = "data.csv", **fields: str):
    form = {"name": name, **fields}
    return client.post("/datasets/upload", data=form, files={"file": (filename, data, "application/octet-stream")})


@pytest.fixture
def tax_dataset(client: TestClient, tax_frame: pd.DataFrame) -> pd.DataFrame:
    r = upload(client, "tax_2024", csv_bytes(tax_frame), key_column="uscc")
    assert r.status_code == 201, r.text
    return tax_frame


# ---------------------------------------------------------------- a real chain for chain-wired nodes

PASSPHRASE = "node test passphrase"
COORDINATOR_SM2 = b"\x01" * 64
"""The coordinator's SM2 key in the test Registry (chain-wired nodes see it as the TLS peer's key)."""


class JobBoard:
    """The coordinator's manifest endpoint (``GET /jobs/{id}/manifest``) over real HTTP, serving
    manifests and terms built by the coordinator's own functions (coordinator.manifest)."""

    def __init__(self) -> None:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        self.jobs: dict[str, dict] = {}
        app = FastAPI()

        @app.get("/jobs/{job_id}/manifest")
        def manifest(job_id: str):  # noqa: ANN202
            if job_id not in self.jobs:
                return JSONResponse(status_code=404, content={"error": "JobNotFound", "detail": job_id})
            return self.jobs[job_id]

        self.app = app


class ChainKit:
    """An anvil chain with the dcp contracts, a coordinator, and members with real keystores."""

    def __init__(self, anvil, keys_dir: Path, board_url: str, board: JobBoard) -> None:
        from contracts.client import ChainClient

        self.anvil = anvil
        self.w3 = anvil.web3()
        self.accounts = list(self.w3.eth.accounts)
        self.governors = self.accounts[:3]
        self.coordinator = self.accounts[3]
        self.admin = ChainClient.deploy(self.w3, self.accounts[0], self.governors, 2)
        self.registry = self.admin.deployment.registry
        self.keys_dir = keys_dir
        self.board_url = board_url
        self.board = board
        self.members: dict[str, tuple[Path, object]] = {}
        from contracts.models import MemberAdmission, Role

        self.admin.admit(self.governors, MemberAdmission(account=self.coordinator, role=Role.COORDINATOR,
                                                         name="coordinator", sm2_public_key=COORDINATOR_SM2))

    def member(self, name: str, role: str = "department") -> tuple[Path, object]:
        """A member with a keystore, funded and admitted (created once per chain)."""
        if name in self.members:
            return self.members[name]
        from contracts.models import MemberAdmission, Role
        from protocols.crypto.keystore import create_keystore

        path, keys = create_keystore(self.keys_dir, name, PASSPHRASE, scrypt_n=2**10)
        addr = keys.public.chain_address
        self.w3.eth.send_transaction({"from": self.accounts[0], "to": addr, "value": self.w3.to_wei(10, "ether")})
        pub = keys.public
        self.admin.admit(self.governors, MemberAdmission(
            account=addr, role=Role.BANK if role == "bank" else Role.DEPARTMENT, name=name,
            sm2_public_key=bytes.fromhex(pub.sm2_public_key), bls_public_key=bytes.fromhex(pub.bls_public_key),
            bls_pop=bytes.fromhex(pub.bls_pop)))
        self.members[name] = (path, keys)
        return path, keys

    def client_of(self, name: str):  # noqa: ANN201
        """A ChainClient that signs as member ``name``."""
        from eth_account import Account

        from contracts.client import ChainClient

        acct = Account.from_key(self.members[name][1].chain_private_key)
        return ChainClient.connect(self.w3, self.registry, signers={acct.address: acct})

    def register_dataset(self, member: str, dataset: str, grade: int = 2) -> bytes:
        from nodes.services.chain import dataset_chain_id

        did = dataset_chain_id(member, dataset)
        if self.admin.dataset(did) is None:
            addr = self.members[member][1].public.chain_address
            self.client_of(member).register_dataset(addr, did, hashlib.sha256(did).digest(), grade)
        return did

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def stop_chain(self) -> None:
        """Stop anvil (with ``--state`` it dumps its state first)."""
        self._port = self.anvil.port
        self.anvil.stop()

    def start_chain(self) -> None:
        """Start anvil again on the same port with the same options (the dumped state loaded)."""
        from contracts.anvil import AnvilNode

        self.anvil = AnvilNode(accounts=10, port=self._port, extra_args=self.anvil.extra_args).start()

    def advance(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [int(seconds)])
        self.w3.provider.make_request("evm_mine", [])

    def node_settings(self, name: str, work: Path, **kw) -> NodeSettings:
        path, _ = self.member(name, kw.pop("role", "department"))
        pass_file = self.keys_dir / "passphrase"
        pass_file.write_text(PASSPHRASE)
        pass_file.chmod(0o600)
        base = dict(name=name, work_dir=work, keystore_path=path, keystore_passphrase_file=pass_file,
                    chain_rpc_url=self.anvil.url, chain_registry=self.registry, coordinator_url=self.board_url,
                    anchor_interval_s=0, officer_scrypt_n=TEST_SCRYPT_N)
        base.update(kw)
        return NodeSettings(**base)

    def publish(self, spec_dict: dict, job_id: str, expires_in: int = 3600) -> tuple[dict, object]:
        """Build the job manifest and terms as the coordinator does and serve them on the board."""
        from datetime import datetime, timezone

        from coordinator.manifest import build_manifest, manifest_sm3, terms_of
        from coordinator.spec import JobSpec

        spec = JobSpec.model_validate(spec_dict)
        expiry = datetime.fromtimestamp(self.now() + expires_in, tz=timezone.utc)
        manifest = build_manifest(spec, job_id, "bank", expiry=expiry)
        # the requester's signed request, as the coordinator receives it and puts it in the manifest
        from protocols.signed_request import sign_request

        bank_keys = self.member(spec.requester, "bank")[1]
        manifest["request"] = sign_request(bank_keys.sm2.private_key, spec.requester,
                                           spec.model_dump(mode="json")).model_dump()
        requester = self.member(spec.requester, "bank")[1].public.chain_address
        terms = terms_of(manifest, requester)
        self.board.jobs[job_id] = {"manifest": manifest, "manifest_hash": manifest_sm3(manifest).hex(),
                                   "terms": json.loads(terms.model_dump_json())}
        return manifest, terms

    def approve_as(self, member: str, terms) -> None:  # noqa: ANN001
        addr = self.members[member][1].public.chain_address
        self.client_of(member).approve(addr, terms)

    def authorize(self, terms) -> None:  # noqa: ANN001
        self.admin.authorize(self.coordinator, terms)


@pytest.fixture(scope="module")
def chain_kit(request, tmp_path_factory) -> Iterator[ChainKit]:
    """A real anvil with the dcp contracts deployed and a coordinator manifest board on real HTTP."""
    import threading

    import uvicorn

    from common.net import free_port
    from contracts.anvil import AnvilNode

    board = JobBoard()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(board.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # a module may ask for anvil options, e.g. ``ANVIL_STATE = True``: ``--state`` in the module's tmp dir
    state = getattr(request.module, "ANVIL_STATE", False)
    extra = ["--state", str(tmp_path_factory.mktemp("anvil") / "state.json")] if state else []
    anvil = AnvilNode(accounts=10, extra_args=extra)
    anvil.start()
    kit = None
    try:
        while not server.started:
            time.sleep(0.02)
        kit = ChainKit(anvil, tmp_path_factory.mktemp("keys"), f"http://127.0.0.1:{port}", board)
        yield kit
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        kit_anvil = kit.anvil if kit is not None else anvil
        kit_anvil.stop()
        anvil.stop()


TAX_FEATURES = ["tax_vat_paid", "tax_credit_grade", "tax_revenue_growth"]
BANK_FEATURES = ["bank_loan_amount", "bank_tenure_months", "bank_overdue_count"]
CHAIN_POLICY = {"max_grade": {"vertical_train": 3}, "default_max_grade": 2, "allowed_roles": ["bank"]}


@pytest.fixture(scope="module")
def vertical_data(tmp_path_factory):  # noqa: ANN201
    from protocols.secretflow.synthetic import make_vertical_data

    return make_vertical_data(tmp_path_factory.mktemp("vertical"), n_rows=300, overlap=0.6, seed=5)


@pytest.fixture(scope="module")
def kit(chain_kit: ChainKit) -> ChainKit:
    """The chain with members bank and tax and their datasets registered (before any snapshot)."""
    chain_kit.member("bank", "bank")
    chain_kit.member("tax")
    chain_kit.register_dataset("bank", "bank_2024")
    chain_kit.register_dataset("tax", "tax_2024")
    chain_kit.register_dataset("tax", "tax_gaps")
    return chain_kit


@pytest.fixture
def chain(kit: ChainKit) -> Iterator[ChainKit]:
    """``kit`` for one test: the chain state is rolled back afterwards (evm_snapshot/evm_revert)."""
    snap = kit.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield kit
    finally:
        kit.board.jobs.clear()
        kit.w3.provider.make_request("evm_revert", [snap])


def vertical_spec(job_tax_columns: list[str], **over) -> dict:
    spec = {
        "kind": "vertical_train", "requester": "bank",
        "purpose": "pre-loan credit model for small enterprises (node test)", "join_key": "uscc",
        "label": {"member": "bank", "dataset": "bank_2024", "column": "default"},
        "inputs": [{"member": "bank", "dataset": "bank_2024", "columns": BANK_FEATURES},
                   {"member": "tax", "dataset": over.pop("tax_dataset", "tax_2024"), "columns": job_tax_columns}],
        "model": {"algorithm": "ss_lr", "params": {"epochs": 1, "batch_size": 64}},
        "timeout_s": 300,
    }
    spec.update(over)
    return spec


@contextmanager
def chain_node(kit: ChainKit, name: str, work: Path, datasets: dict[str, bytes], **kw) -> Iterator[TestClient]:
    """A chain-wired node app (TestClient, lifespan running) with ``datasets`` (name -> CSV bytes) ingested."""
    app = create_app(kit.node_settings(name, work, **kw))
    with officer_client(app, keys={"coordinator": COORDINATOR_SM2}) as client:
        for dataset, data in datasets.items():
            r = upload(client, dataset, data, key_column="uscc")
            assert r.status_code == 201, r.text
        assert client.put("/policy", json=CHAIN_POLICY).status_code == 200
        yield client
