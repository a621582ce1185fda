"""The regulator's audit: recompute, from chain events alone, whether every use of data was
authorized — without trusting the coordinator's database or even the contracts' own checks.

Given only an RPC URL and the Registry's address, :func:`run_audit` reads the Registry's bound
Authorizations and Receipts addresses, pulls every event of the three contracts (paged by block
range), replays them in chain order and reports:

* ``receipt_without_authorization`` — a usage receipt for a job that has no authorization;
* ``receipt_outside_authorization`` — a receipt recorded, or a run that started or finished,
  when the authorization was not live (before it was written, after its expiry or revocation),
  or for a dataset the authorization does not cover;
* ``runs_beyond_maximum`` — more receipts for a (job, dataset) than the authorization allows;
* ``approval_missing`` — an authorization some dataset owner did not approve: no ``Approved``
  event by the owner for the recomputed digest of exactly those terms, or a BLS aggregate that
  does not verify (re-checked off chain with py_ecc) against the owners' registered keys;
* ``receipt_from_non_owner`` — a receipt sent by a node that did not own the dataset (or was
  not an active member) at that time;
* ``anchor_went_backwards`` — a node's audit-log anchor covering fewer entries than an earlier
  one (or the same count with a different head: a rewritten log);
* and, as supporting evidence, ``digest_mismatch`` (the digest an authorization claims is not
  that of its terms) and ``authorization_by_non_coordinator``.

The real contracts already refuse most of these; the audit exists for when they were not the
real contracts, were mis-deployed, or were bypassed — it recomputes, it does not trust.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict
from web3 import Web3

from contracts.client import approval_digest, fetch_events, terms_from_abi
from contracts.errors import DeploymentError
from contracts.models import ZERO_ADDRESS, Address, EventRecord, HexBytes, Role, Terms


class FindingKind(str, enum.Enum):
    """What the audit can find."""

    RECEIPT_WITHOUT_AUTHORIZATION = "receipt_without_authorization"
    RECEIPT_OUTSIDE_AUTHORIZATION = "receipt_outside_authorization"
    RUNS_BEYOND_MAXIMUM = "runs_beyond_maximum"
    APPROVAL_MISSING = "approval_missing"
    RECEIPT_FROM_NON_OWNER = "receipt_from_non_owner"
    ANCHOR_WENT_BACKWARDS = "anchor_went_backwards"
    DIGEST_MISMATCH = "digest_mismatch"
    AUTHORIZATION_BY_NON_COORDINATOR = "authorization_by_non_coordinator"


class Finding(BaseModel):
    """One violation, with where on the chain it is."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    detail: str
    block_number: int
    tx_hash: HexBytes
    job_id: HexBytes | None = None
    dataset_id: HexBytes | None = None
    account: Address | None = None


class AuditReport(BaseModel):
    """What the audit read and what it found."""

    chain_id: int
    registry: Address
    authorizations: Address
    receipts: Address
    from_block: int
    to_block: int
    members: int
    datasets: int
    authorizations_count: int
    receipts_count: int
    anchors_count: int
    findings: list[Finding]

    @property
    def clean(self) -> bool:
        """True iff nothing was found."""
        return not self.findings

    def count(self, kind: FindingKind) -> int:
        """How many findings of ``kind``."""
        return sum(1 for f in self.findings if f.kind == kind)


@dataclass
class _MemberState:
    role: Role
    active: bool
    bls_key: bytes


@dataclass
class _AuthState:
    terms: Terms
    created_at: int
    revoked_at: int | None = None
    runs: dict[bytes, int] = field(default_factory=dict)


def _fmt(b: bytes) -> str:
    return "0x" + b.hex()[:12] + "…"


def verify_aggregate_offchain(bls_keys: list[bytes], message: bytes, signature: bytes) -> bool:
    """FastAggregateVerify with py_ecc over EIP-2537-encoded keys (128 bytes) and signature (256)."""
    from py_ecc.bls.g2_primitives import G1_to_pubkey, G2_to_signature
    from py_ecc.fields import optimized_bls12_381_FQ as FQ
    from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
    from py_ecc.optimized_bls12_381 import b, b2, is_on_curve

    from protocols.crypto.bls import fast_aggregate_verify
    from protocols.crypto.errors import CryptoError

    def fp(chunk: bytes) -> int:
        return int.from_bytes(chunk[16:64], "big")

    try:
        pubkeys = []
        for key in bls_keys:
            if len(key) != 128:
                return False
            point = (FQ(fp(key[:64])), FQ(fp(key[64:])), FQ.one())
            if not is_on_curve(point, b):
                return False
            pubkeys.append(G1_to_pubkey(point))
        if len(signature) != 256:
            return False
        s = [fp(signature[i : i + 64]) for i in range(0, 256, 64)]
        sig_point = (FQ2([s[0], s[1]]), FQ2([s[2], s[3]]), FQ2.one())
        if not is_on_curve(sig_point, b2):
            return False
        return fast_aggregate_verify(pubkeys, message, G2_to_signature(sig_point))
    except (CryptoError, ValueError, AssertionError):
        return False


def run_audit(
    w3: Web3,
    registry: str,
    from_block: int = 0,
    to_block: int | None = None,
    page_size: int = 2_000,
    clock_tolerance: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AuditReport:
    """Audit the deployment whose Registry is at ``registry``, reading the chain only.

    ``clock_tolerance`` (seconds) forgives node clocks that run slightly ahead of or behind the
    chain when comparing a run's ``startedAt``/``finishedAt`` with the authorization's window.
    """
    registry = to_checksum_address(registry)
    if not w3.eth.get_code(registry):
        raise DeploymentError(f"no contract at {registry}")
    from contracts.build import load_artifact

    reg = w3.eth.contract(address=registry, abi=load_artifact("Registry").abi)
    try:
        auth_addr = reg.functions.authorizations().call()
        receipts_addr = reg.functions.receipts().call()
    except Exception as exc:  # noqa: BLE001 - not a Registry
        raise DeploymentError(f"{registry} is not a dcp Registry: {exc}") from exc
    if auth_addr == ZERO_ADDRESS:
        raise DeploymentError(f"Registry {registry} has no bound Authorizations/Receipts contracts")
    chain_id = w3.eth.chain_id
    last = w3.eth.block_number if to_block is None else to_block
    say = progress or (lambda _msg: None)

    say("reading Registry events")
    events = fetch_events(w3, registry, "Registry", from_block=from_block, to_block=last, page_size=page_size)
    say("reading Authorizations events")
    events += fetch_events(
        w3, auth_addr, "Authorizations", from_block=from_block, to_block=last, page_size=page_size
    )
    say("reading Receipts events")
    events += fetch_events(w3, receipts_addr, "Receipts", from_block=from_block, to_block=last, page_size=page_size)
    events.sort(key=lambda e: (e.block_number, e.log_index))

    times: dict[int, int] = {}

    def block_time(n: int) -> int:
        if n not in times:
            times[n] = int(w3.eth.get_block(n)["timestamp"])
        return times[n]

    aggregates = {
        (e.tx_hash, e.args["jobId"]): e for e in events if e.event == "AggregateApproval"
    }
    members: dict[str, _MemberState] = {}
    owners: dict[bytes, str] = {}
    approvals: dict[tuple[bytes, bytes], str] = {}
    auths: dict[bytes, _AuthState] = {}
    anchors: dict[str, tuple[int, bytes]] = {}
    findings: list[Finding] = []
    n_receipts = n_anchors = 0

    def find(kind: FindingKind, e: EventRecord, detail: str, **where: Any) -> None:
        findings.append(Finding(kind=kind, detail=detail, block_number=e.block_number, tx_hash=e.tx_hash, **where))

    def is_active(account: str) -> bool:
        m = members.get(account)
        return bool(m and m.active)

    say(f"replaying {len(events)} events")
    for e in events:
        a = e.args
        if e.event == "MemberAdmitted":
            members[a["account"]] = _MemberState(role=Role(a["role"]), active=True, bls_key=a["blsPublicKey"])
        elif e.event == "MemberRemoved":
            if a["account"] in members:
                members[a["account"]].active = False
        elif e.event == "DatasetRegistered":
            owners.setdefault(a["datasetId"], a["owner"])
        elif e.event == "Approved":
            d = a["datasetId"]
            if owners.get(d) == a["approver"] and is_active(a["approver"]):
                approvals[(a["digest"], d)] = a["approver"]
        elif e.event == "AuthorizationCreated":
            _on_authorization(e, chain_id, auth_addr, members, owners, approvals, aggregates, auths, find, block_time)
        elif e.event == "AuthorizationRevoked":
            st = auths.get(a["jobId"])
            if st is not None and st.revoked_at is None:
                st.revoked_at = block_time(e.block_number)
        elif e.event == "UsageRecorded":
            n_receipts += 1
            _on_receipt(e, auths, owners, is_active, find, block_time, clock_tolerance)
        elif e.event == "AuditHeadAnchored":
            n_anchors += 1
            node, count, head = a["node"], a["entryCount"], a["headHash"]
            prev = anchors.get(node)
            if prev is not None and (count < prev[0] or (count == prev[0] and head != prev[1])):
                find(
                    FindingKind.ANCHOR_WENT_BACKWARDS,
                    e,
                    f"anchor of {count} entries (head {_fmt(head)}) after one of {prev[0]} (head {_fmt(prev[1])})",
                    account=node,
                )
            if prev is None or count >= prev[0]:
                anchors[node] = (count, head)

    return AuditReport(
        chain_id=chain_id,
        registry=registry,
        authorizations=auth_addr,
        receipts=receipts_addr,
        from_block=from_block,
        to_block=last,
        members=len(members),
        datasets=len(owners),
        authorizations_count=len(auths),
        receipts_count=n_receipts,
        anchors_count=n_anchors,
        findings=findings,
    )


def _terms_from_event(raw: Any) -> Terms:
    if isinstance(raw, dict):
        return Terms(
            job_id=raw["jobId"],
            manifest_hash=raw["manifestHash"],
            dataset_ids=tuple(raw["datasetIds"]),
            requester=raw["requester"],
            expiry=raw["expiry"],
            max_runs=raw["maxRuns"],
        )
    return terms_from_abi(raw)


def _on_authorization(
    e: EventRecord,
    chain_id: int,
    auth_addr: str,
    members: dict[str, _MemberState],
    owners: dict[bytes, str],
    approvals: dict[tuple[bytes, bytes], str],
    aggregates: dict[tuple[bytes, bytes], EventRecord],
    auths: dict[bytes, _AuthState],
    find: Callable[..., None],
    block_time: Callable[[int], int],
) -> None:
    a = e.args
    terms = _terms_from_event(a["terms"])
    job = terms.job_id
    if job in auths:  # a second authorization for one job: keep the first, flag the rewrite
        find(FindingKind.APPROVAL_MISSING, e, "authorization written twice for one job", job_id=job)
        return
    auths[job] = _AuthState(terms=terms, created_at=block_time(e.block_number))
    digest = approval_digest(terms, chain_id, auth_addr)
    if bytes(a["digest"]) != digest:
        find(
            FindingKind.DIGEST_MISMATCH,
            e,
            f"authorization claims digest {_fmt(a['digest'])} but its terms hash to {_fmt(digest)}",
            job_id=job,
        )
    coord = members.get(a["coordinator"])
    if coord is None or not coord.active or coord.role != Role.COORDINATOR:
        find(
            FindingKind.AUTHORIZATION_BY_NON_COORDINATOR,
            e,
            "authorization written by an account that is not an active coordinator",
            job_id=job,
            account=a["coordinator"],
        )
    if a["viaBls"]:
        agg = aggregates.get((e.tx_hash, job))
        signers: list[str] = []
        for d in terms.dataset_ids:
            o = owners.get(d)
            if o is not None and o not in signers:
                signers.append(o)
        unknown = [d for d in terms.dataset_ids if d not in owners]
        keys = [members[o].bls_key for o in signers if o in members and members[o].active]
        ok = (
            agg is not None
            and not unknown
            and len(keys) == len(signers)
            and verify_aggregate_offchain(keys, digest, bytes(agg.args["signature"]))
        )
        if not ok:
            for d in terms.dataset_ids:
                find(
                    FindingKind.APPROVAL_MISSING,
                    e,
                    "the BLS aggregate does not verify for the dataset owners' registered keys over these terms",
                    job_id=job,
                    dataset_id=d,
                    account=owners.get(d),
                )
        return
    for d in terms.dataset_ids:
        owner = owners.get(d)
        if owner is None:
            find(FindingKind.APPROVAL_MISSING, e, "dataset is not registered", job_id=job, dataset_id=d)
        elif approvals.get((digest, d)) != owner:
            find(
                FindingKind.APPROVAL_MISSING,
                e,
                "the dataset's owner never approved these exact terms",
                job_id=job,
                dataset_id=d,
                account=owner,
            )


def _on_receipt(
    e: EventRecord,
    auths: dict[bytes, _AuthState],
    owners: dict[bytes, str],
    is_active: Callable[[str], bool],
    find: Callable[..., None],
    block_time: Callable[[int], int],
    tolerance: int,
) -> None:
    a = e.args
    job, d, node = a["jobId"], a["datasetId"], a["node"]
    where = {"job_id": job, "dataset_id": d, "account": node}
    owner = owners.get(d)
    if owner != node or not is_active(node):
        find(
            FindingKind.RECEIPT_FROM_NON_OWNER,
            e,
            f"receipt sent by {node}, but the dataset's owner is {owner or 'nobody'}"
            if owner != node
            else "receipt sent by a node that is no longer an active member",
            **where,
        )
    st = auths.get(job)
    if st is None:
        find(FindingKind.RECEIPT_WITHOUT_AUTHORIZATION, e, "no authorization exists for this job", **where)
        return
    t = block_time(e.block_number)
    end = st.terms.expiry if st.revoked_at is None else min(st.terms.expiry, st.revoked_at)
    if d not in st.terms.dataset_ids:
        find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, "dataset not covered by the authorization", **where)
    elif st.revoked_at is not None and t >= st.revoked_at:
        find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, f"recorded after revocation at {st.revoked_at}", **where)
    elif t >= st.terms.expiry:
        find(FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION, e, f"recorded after expiry at {st.terms.expiry}", **where)
    elif a["startedAt"] + tolerance < st.created_at:
        find(
            FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION,
            e,
            f"run started at {a['startedAt']}, before the authorization was written at {st.created_at}",
            **where,
        )
    elif a["finishedAt"] > end + tolerance:
        find(
            FindingKind.RECEIPT_OUTSIDE_AUTHORIZATION,
            e,
            f"run finished at {a['finishedAt']}, after the authorization ended at {end}",
            **where,
        )
    count = st.runs.get(d, 0) + 1
    st.runs[d] = count
    if count > st.terms.max_runs:
        find(
            FindingKind.RUNS_BEYOND_MAXIMUM,
            e,
            f"run {count} of a dataset allowed {st.terms.max_runs} run(s)",
            **where,
        )
