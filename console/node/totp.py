"""The console's second factor: a time-based one-time password (TOTP, RFC 6238) per officer.

An officer signs in to the node console with the password of their ``dcp node user`` account and
the 6-digit code of an authenticator app (HMAC-SHA1, 30-second steps — what every authenticator
app speaks). The secret is enrolled on the node's host (``dcp node user totp NAME -c node.yaml``
prints it once, as base32 and as an ``otpauth://`` URI) and kept in the node's own database
(``officer_totp``, 0600 like the rest of it). A code is accepted within one step of the node's
clock, and each step only once per officer (a code seen over the officer's shoulder cannot be
replayed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from urllib.parse import quote, urlencode

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

STEP_S = 30
DIGITS = 6
#: Steps before and after the current one a code may come from (clock drift, a slow typist).
WINDOW = 1


class OfficerTotp(SQLModel, table=True):
    """An officer's TOTP secret and the last step a code of it was accepted for."""

    __tablename__ = "officer_totp"

    officer: str = Field(primary_key=True)
    secret: str  # base32, no padding
    last_step: int = 0


def code_at(secret_b32: str, step: int) -> str:
    """The code of ``step`` (RFC 4226 HOTP of the step counter)."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def current_code(secret_b32: str, now: float | None = None) -> str:
    """The code an authenticator shows now."""
    return code_at(secret_b32, int((time.time() if now is None else now) // STEP_S))


class SecondFactor:
    """Enrolment and checking of officers' TOTP codes on one node."""

    def __init__(self, engine: Engine, issuer: str) -> None:
        self.engine = engine
        self.issuer = issuer
        self._lock = threading.Lock()  # one check at a time: a step is used up exactly once
        SQLModel.metadata.create_all(engine, tables=[OfficerTotp.__table__])  # type: ignore[attr-defined]

    def enroll(self, officer: str) -> str:
        """A new secret for ``officer`` (replacing any old one); returned once, base32."""
        secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
        with Session(self.engine) as s:
            row = s.get(OfficerTotp, officer)
            if row is None:
                row = OfficerTotp(officer=officer, secret=secret)
            row.secret, row.last_step = secret, 0
            s.add(row)
            s.commit()
        return secret

    def uri(self, officer: str, secret: str) -> str:
        """The ``otpauth://`` URI an authenticator app scans."""
        label = quote(f"{self.issuer}:{officer}")
        return f"otpauth://totp/{label}?" + urlencode({"secret": secret, "issuer": self.issuer, "digits": DIGITS,
                                                       "period": STEP_S})

    def enrolled(self, officer: str) -> bool:
        with Session(self.engine) as s:
            return s.get(OfficerTotp, officer) is not None

    def check(self, officer: str, code: str, now: float | None = None) -> bool:
        """Whether ``code`` is ``officer``'s code of a step near now not used before; a good code
        uses its step up. An officer without a secret never passes."""
        code = code.strip().replace(" ", "")
        if len(code) != DIGITS or not code.isdigit():
            return False
        step_now = int((time.time() if now is None else now) // STEP_S)
        with self._lock, Session(self.engine) as s:
            row = s.exec(select(OfficerTotp).where(OfficerTotp.officer == officer)).first()
            if row is None:
                return False
            for step in range(step_now - WINDOW, step_now + WINDOW + 1):
                if step > row.last_step and hmac.compare_digest(code_at(row.secret, step), code):
                    row.last_step = step
                    s.add(row)
                    s.commit()
                    return True
        return False
