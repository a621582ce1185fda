"""Test plumbing for verified identities: member keys, a peer-key ASGI wrapper, officer clients.

In production the 国密 TLS server puts the peer's proven SM2 key into the ASGI scope
(``protocols.identity.PEER_KEY_SCOPE``). In-process tests where TLS is not the point wrap the
app in :class:`AsPeer`, which does the same for the key of the member named by the test-only
header ``x-test-peer`` (default: the wrapper's ``default``; ``none``: no key, like plain HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from protocols.crypto import sm2
from protocols.identity import PEER_KEY_SCOPE, PeerEntry, StaticDirectory

MEMBER_ROLES = {"coordinator": "coordinator", "bank": "bank", "tax": "department", "power": "department",
                "regulator": "regulator", "researcher": "researcher"}
_KEYS: dict[str, sm2.Sm2KeyPair] = {}
PASSWORD = "correct horse battery"
TEST_SCRYPT_N = 2**10


def member_key(name: str) -> sm2.Sm2KeyPair:
    """A fixed SM2 key pair per member name for this test session."""
    if name not in _KEYS:
        _KEYS[name] = sm2.generate_keypair()
    return _KEYS[name]


def peer_entries(*names: str) -> list[dict[str, Any]]:
    """``peers`` settings entries for the named members (default: every member of MEMBER_ROLES)."""
    return [{"name": n, "role": MEMBER_ROLES[n], "sm2_public_key": member_key(n).public_key.hex()}
            for n in (names or tuple(MEMBER_ROLES))]


class AsPeer:
    """ASGI wrapper: set the scope's peer key as a TLS server would, for the member the test names."""

    def __init__(self, app: Any, default: str | None = "coordinator", keys: dict[str, bytes] | None = None) -> None:
        self.app = app
        self.default = default
        self.keys = keys or {}
        self.state = getattr(app, "state", None)

    def key_of(self, name: str) -> bytes:
        return self.keys[name] if name in self.keys else member_key(name).public_key

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-test-peer"]
            named = dict(scope["headers"]).get(b"x-test-peer")
            peer = named.decode() if named is not None else self.default
            scope = {**scope, "headers": headers}
            if peer and peer != "none":
                scope[PEER_KEY_SCOPE] = self.key_of(peer)
        await self.app(scope, receive, send)


class OfficerClient(TestClient):
    """A TestClient acting as officer ``token`` (default header); with ``confirmer`` set, a policy
    or schema change it proposes is confirmed at once by that second officer (four eyes), and the
    confirmation's answer is returned."""

    confirmer: str | None = None

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        r = super().request(method, url, *args, **kwargs)
        path = str(url).split("?")[0]
        four_eyes = (method.upper() == "PUT" and path == "/policy") or (
            method.upper() == "PATCH" and path.startswith("/datasets/") and path.endswith("/schema"))
        if four_eyes and self.confirmer and r.status_code == 202:
            r = super().request("POST", f"/proposals/{r.json()['id']}/confirm",
                                headers={"Authorization": f"Bearer {self.confirmer}"})
        return r


def add_officer(app: Any, name: str, roles: list[str], password: str = PASSWORD) -> str:
    """Create officer ``name`` on the node app and log in; its session token."""
    ctx = app.state.ctx
    ctx.officers.scrypt_n = min(ctx.officers.scrypt_n, TEST_SCRYPT_N)
    if name not in {o.name for o in ctx.officers.list()}:  # a node re-opened on its database keeps them
        ctx.officers.add(name, roles, password)
    return ctx.officers.login(name, password).token


def secret_file(path: Any, text: str) -> Any:
    """Write ``text`` to ``path`` as a 0600 secret file (how a keystore passphrase is handed over)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def officer_client(app: Any, peer: str | None = "coordinator", four_eyes: bool = True,
                   keys: dict[str, bytes] | None = None) -> Iterator[OfficerClient]:
    """A running node app with officers ``alice`` and ``bob`` (every role each); requests go as
    ``alice`` from TLS peer ``peer``; ``four_eyes`` lets ``bob`` confirm ``alice``'s proposals."""
    ctx = app.state.ctx
    if isinstance(ctx.members, StaticDirectory) and not ctx.settings.peers:
        # a node without a chain and without configured peers: know this session's test members
        ctx.members = StaticDirectory(PeerEntry(**e) for e in peer_entries())
    with OfficerClient(AsPeer(app, peer, keys)) as c:
        alice = add_officer(app, "alice", ["approver", "steward", "auditor", "admin"])
        bob = add_officer(app, "bob", ["approver", "steward", "auditor", "admin"])
        c.headers["Authorization"] = f"Bearer {alice}"
        c.confirmer = bob if four_eyes else None
        c.tokens = {"alice": alice, "bob": bob}  # type: ignore[attr-defined]
        yield c
