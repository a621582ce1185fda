"""The node's officers: the named people who act for the member (approve, publish, audit, administer).

- **Accounts** live in the node's own database (``officer`` table), created with
  ``dcp node user add``. Each holds one or more roles: ``approver`` (approves or rejects requests in
  the inbox), ``steward`` (data steward: datasets, schemas and grades, policy), ``auditor`` (reads
  the audit log), ``admin`` (anchors and prunes the log), ``analyst`` (a requester's analyst: submits
  jobs and opens their results in the requester's console).
- **Passwords** are stored as scrypt (RFC 7914) hashes: N = 2**15, r = 8, p = 1 (32 MiB of memory
  per guess), a 16-byte random salt, 32-byte key; the parameters are stored with each hash, so they
  can be raised later without invalidating old ones.
- **Sessions**: ``login`` gives a token ``dcp1.<payload>.<mac>``; the payload names the session,
  the officer, this node and an expiry (``session_ttl_s``, default 15 minutes); the MAC is
  HMAC-SM3 under a 32-byte secret kept in ``<work_dir>/session.key`` (0600). A token is honoured
  only while its session row is not revoked (logout, ``user disable``, ``user passwd``), the officer
  is active and the token was issued on this node (another node's secret cannot make its MAC).
- **Four eyes**: a policy or grade change is a :class:`ChangeProposal` made by one officer and
  applied only when a *different* officer confirms it before it expires (``proposal_ttl_s``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from nodes.errors import NodeError

OFFICER_ROLES = ("approver", "steward", "auditor", "admin", "analyst")
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**15, 8, 1, 32
MIN_PASSWORD = 10
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- errors


class NotAuthenticated(NodeError):
    """No verified identity: no peer key from the TLS channel, or no (valid) officer session."""

    status_code = 401


class Forbidden(NodeError):
    """The verified caller's role does not allow this route."""

    status_code = 403


class UnknownMember(NodeError):
    """The key the peer proved belongs to no member of the Registry."""

    status_code = 403


class MemberInactive(NodeError):
    """The peer's member was removed (or its key rotated) on chain."""

    status_code = 403


class OfficerError(NodeError):
    """An officer account cannot be created or changed as asked."""

    status_code = 422


class OfficerExists(NodeError):
    status_code = 409


class OfficerNotFound(NodeError):
    status_code = 404


class ProposalNotFound(NodeError):
    status_code = 404


class ProposalNotPending(NodeError):
    """The proposal was already confirmed, cancelled or has expired."""

    status_code = 409


class FourEyesViolation(NodeError):
    """The officer who proposed a change cannot also confirm it."""

    status_code = 403


# ---------------------------------------------------------------- tables and models


class OfficerRecord(SQLModel, table=True):
    __tablename__ = "officer"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    roles: str  # comma-separated OFFICER_ROLES
    password_hash: str
    active: bool = True
    created_at: datetime = Field(default_factory=_now)
    password_changed_at: datetime = Field(default_factory=_now)


class OfficerSession(SQLModel, table=True):
    __tablename__ = "officer_session"

    id: str = Field(primary_key=True)
    officer: str = Field(index=True)
    issued_at: datetime = Field(default_factory=_now)
    expires_at: datetime
    revoked: bool = False


class ChangeProposal(SQLModel, table=True):
    """A four-eyes change waiting for a second officer."""

    __tablename__ = "change_proposal"

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # policy | schema
    target: str
    body_json: str
    proposed_by: str
    created_at: datetime = Field(default_factory=_now)
    expires_at: datetime
    status: str = "pending"  # pending | confirmed | cancelled | expired
    decided_by: str | None = None
    decided_at: datetime | None = None


class OfficerOut(BaseModel):
    name: str
    roles: list[str]
    active: bool
    created_at: datetime


class OfficerIdentity(BaseModel):
    """An officer proved by a live session token on this node."""

    name: str
    roles: list[str]
    node: str
    session: str

    @property
    def actor(self) -> str:
        """How the audit log names this officer: ``officer:<name>@<member>``."""
        return f"officer:{self.name}@{self.node}"


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str
    officer: str
    roles: list[str]
    expires_at: datetime


class ProposalOut(BaseModel):
    id: int
    kind: str
    target: str
    body: dict[str, Any]
    proposed_by: str
    created_at: datetime
    expires_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None


# ---------------------------------------------------------------- passwords


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$key`` (salt and key base64)."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN,
                         maxmem=128 * n * SCRYPT_R * 2)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, key = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=128 * int(n) * int(r) * 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def private_file_secret(path: Path, size: int = 32) -> bytes:
    """Read the secret in ``path``, creating it (0600, random) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) < size:
            raise OfficerError(f"{path} is damaged (shorter than {size} bytes)") from None
        return data[:size]
    with os.fdopen(fd, "wb") as fh:
        secret = secrets.token_bytes(size)
        fh.write(secret)
    return secret


# ---------------------------------------------------------------- the service


class OfficerService:
    """Accounts, sessions and four-eyes proposals of one node."""

    def __init__(self, node: str, engine: Engine, secret: bytes, *, session_ttl_s: float = 900.0,
                 proposal_ttl_s: float = 86400.0, scrypt_n: int = SCRYPT_N,
                 write_lock: threading.RLock | None = None) -> None:
        """``write_lock``: the node's one writer lock (``AuditLog.write_lock``), held by every write here."""
        self.node = node
        self.engine = engine
        self._write_lock = write_lock or threading.RLock()
        self._secret = secret
        self.session_ttl_s = session_ttl_s
        self.proposal_ttl_s = proposal_ttl_s
        self.scrypt_n = scrypt_n

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A session for a read-then-write transaction, under the node's writer lock."""
        with self._write_lock, Session(self.engine, expire_on_commit=False) as s:
            yield s

    # ------------------------------------------------------------ accounts

    @staticmethod
    def _check_roles(roles: list[str]) -> list[str]:
        bad = [r for r in roles if r not in OFFICER_ROLES]
        if not roles or bad:
            raise OfficerError(f"roles must be some of {', '.join(OFFICER_ROLES)} (got {', '.join(roles) or 'none'})")
        return sorted(set(roles))

    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise OfficerError(f"a password has at least {MIN_PASSWORD} characters")

    @staticmethod
    def _out(r: OfficerRecord) -> OfficerOut:
        return OfficerOut(name=r.name, roles=r.roles.split(","), active=r.active, created_at=_aware(r.created_at))

    def add(self, name: str, roles: list[str], password: str) -> OfficerOut:
        if not _NAME.match(name):
            raise OfficerError("an officer name is 2-64 of a-z 0-9 _ . - and starts with a letter")
        roles = self._check_roles(roles)
        self._check_password(password)
        with self._writing() as s:
            if s.exec(select(OfficerRecord).where(OfficerRecord.name == name)).first():
                raise OfficerExists(f"officer {name!r} exists")
            r = OfficerRecord(name=name, roles=",".join(roles), password_hash=hash_password(password, n=self.scrypt_n))
            s.add(r)
            s.commit()
            return self._out(r)

    def list(self) -> list[OfficerOut]:
        with Session(self.engine) as s:
            return [self._out(r) for r in s.exec(select(OfficerRecord).order_by(OfficerRecord.name))]

    def _get(self, s: Session, name: str) -> OfficerRecord:
        r = s.exec(select(OfficerRecord).where(OfficerRecord.name == name)).first()
        if r is None:
            raise OfficerNotFound(f"no officer {name!r}")
        return r

    def _revoke_sessions(self, s: Session, name: str) -> None:
        for sess in s.exec(select(OfficerSession).where(OfficerSession.officer == name)):
            sess.revoked = True
            s.add(sess)

    def disable(self, name: str) -> OfficerOut:
        """Disable the account and end its sessions at once."""
        with self._writing() as s:
            r = self._get(s, name)
            r.active = False
            s.add(r)
            self._revoke_sessions(s, name)
            s.commit()
            return self._out(r)

    def set_password(self, name: str, password: str) -> OfficerOut:
        """A new password; every session of the officer ends."""
        self._check_password(password)
        with self._writing() as s:
            r = self._get(s, name)
            r.password_hash = hash_password(password, n=self.scrypt_n)
            r.password_changed_at = _now()
            s.add(r)
            self._revoke_sessions(s, name)
            s.commit()
            return self._out(r)

    # ------------------------------------------------------------ sessions

    def login(self, name: str, password: str) -> TokenOut:
        with self._writing() as s:
            r = s.exec(select(OfficerRecord).where(OfficerRecord.name == name)).first()
            # the same KDF work whether or not the account exists (no user enumeration by timing)
            ok = check_password(password, r.password_hash if r else _DUMMY_HASH)
            if r is None or not ok or not r.active:
                raise NotAuthenticated("wrong officer name or password, or the account is disabled")
            now = _now()
            exp = now + timedelta(seconds=self.session_ttl_s)
            sid = secrets.token_hex(16)
            s.add(OfficerSession(id=sid, officer=name, issued_at=now, expires_at=exp))
            s.commit()
            roles = r.roles.split(",")
        payload = json.dumps({"sid": sid, "off": name, "node": self.node, "exp": int(exp.timestamp())},
                             separators=(",", ":")).encode()
        mac = hmac.new(self._secret, payload, "sm3").digest()
        return TokenOut(token=f"dcp1.{_b64(payload)}.{_b64(mac)}", officer=name, roles=roles, expires_at=exp)

    def logout(self, identity: OfficerIdentity) -> None:
        with self._writing() as s:
            sess = s.get(OfficerSession, identity.session)
            if sess is not None:
                sess.revoked = True
                s.add(sess)
                s.commit()

    def verify(self, token: str) -> OfficerIdentity:
        """The officer behind ``token``, or NotAuthenticated."""
        try:
            tag, p64, m64 = token.split(".")
            payload, mac = _unb64(p64), _unb64(m64)
        except ValueError:
            raise NotAuthenticated("the officer token is malformed") from None
        if tag != "dcp1" or not hmac.compare_digest(mac, hmac.new(self._secret, payload, "sm3").digest()):
            raise NotAuthenticated("the officer token was not issued by this node")
        claims = json.loads(payload)
        if claims.get("node") != self.node:
            raise NotAuthenticated("the officer token belongs to another node")
        if claims["exp"] <= _now().timestamp():
            raise NotAuthenticated("the officer session has expired; log in again")
        with Session(self.engine) as s:
            sess = s.get(OfficerSession, claims["sid"])
            r = s.exec(select(OfficerRecord).where(OfficerRecord.name == claims["off"])).first()
            if sess is None or sess.revoked or r is None or not r.active:
                raise NotAuthenticated("the officer session was ended (logout, disabled account or new password)")
            return OfficerIdentity(name=r.name, roles=r.roles.split(","), node=self.node, session=sess.id)

    # ------------------------------------------------------------ four eyes

    @staticmethod
    def _pout(p: ChangeProposal) -> ProposalOut:
        return ProposalOut(id=p.id, kind=p.kind, target=p.target, body=json.loads(p.body_json),
                           proposed_by=p.proposed_by, created_at=_aware(p.created_at),
                           expires_at=_aware(p.expires_at), status=p.status, decided_by=p.decided_by,
                           decided_at=_aware(p.decided_at) if p.decided_at else None)

    def propose(self, kind: str, target: str, body: dict[str, Any], by: OfficerIdentity) -> ProposalOut:
        with self._writing() as s:
            p = ChangeProposal(kind=kind, target=target, body_json=json.dumps(body, ensure_ascii=False),
                               proposed_by=by.name, expires_at=_now() + timedelta(seconds=self.proposal_ttl_s))
            s.add(p)
            s.commit()
            return self._pout(p)

    def _expire(self, s: Session) -> None:
        now = _now()
        for p in s.exec(select(ChangeProposal).where(ChangeProposal.status == "pending",
                                                     ChangeProposal.expires_at <= now)):
            if _aware(p.expires_at) <= now:
                p.status, p.decided_at = "expired", now
                s.add(p)

    def expire_overdue(self) -> None:
        """Mark the overdue pending proposals expired. Looked for without the node's writer lock (one
        indexed read); the lock is taken only when some are due, so a read never waits on a writer."""
        with Session(self.engine) as s:
            due = s.exec(select(ChangeProposal.id).where(ChangeProposal.status == "pending",
                                                         ChangeProposal.expires_at <= _now()).limit(1)).first()
        if due is None:
            return
        with self._writing() as s:
            self._expire(s)
            s.commit()

    def proposals(self, status: str | None = None) -> list[ProposalOut]:
        """Every proposal (of ``status``), oldest first: a read (the writer lock only when an overdue
        one must be marked expired first, :meth:`expire_overdue`)."""
        self.expire_overdue()
        with Session(self.engine) as s:
            q = select(ChangeProposal).order_by(ChangeProposal.id)
            if status:
                q = q.where(ChangeProposal.status == status)
            return [self._pout(p) for p in s.exec(q)]

    def proposal(self, proposal_id: int) -> ProposalOut:
        with Session(self.engine) as s:
            p = s.get(ChangeProposal, proposal_id)
            if p is None:
                raise ProposalNotFound(f"no proposal {proposal_id}")
            return self._pout(p)

    def pending_for_confirmation(self, proposal_id: int, by: OfficerIdentity) -> ProposalOut:
        """The proposal ``by`` may confirm (pending, unexpired, proposed by someone else)."""
        with self._writing() as s:
            self._expire(s)
            s.commit()
            p = s.get(ChangeProposal, proposal_id)
            if p is None:
                raise ProposalNotFound(f"no proposal {proposal_id}")
            if p.status != "pending":
                raise ProposalNotPending(f"proposal {proposal_id} is {p.status}")
            if p.proposed_by == by.name:
                raise FourEyesViolation(f"proposal {proposal_id} was made by {by.name}; a different officer confirms it")
            return self._pout(p)

    def close(self, proposal_id: int, status: str, by: OfficerIdentity) -> ProposalOut:
        """Mark a pending proposal confirmed or cancelled (after the change itself was applied)."""
        with self._writing() as s:
            p = s.get(ChangeProposal, proposal_id)
            if p is None or p.status != "pending":
                raise ProposalNotPending(f"proposal {proposal_id} is no longer pending")
            p.status, p.decided_by, p.decided_at = status, by.name, _now()
            s.add(p)
            s.commit()
            return self._pout(p)


_DUMMY_HASH = hash_password("not a password of anyone", n=2**14)
