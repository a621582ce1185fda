"""Officers' sign-in to the node console: password + TOTP, a session cookie, logout, deep links.

* **Who.** The officers of this node's ``dcp node user`` accounts (:mod:`nodes.services.officers`),
  each with a TOTP secret enrolled on the node's host (:mod:`console.node.totp`). An officer
  without one cannot sign in to the console (the JSON API's token login is unchanged).
* **Session.** Signing in makes an ordinary officer session of the node (HMAC-SM3 token naming the
  node, ``session_ttl_s``, revocable: logout, ``user disable``, ``user passwd``) and puts its token
  in the cookie ``__Host-dcp_console``: ``Secure`` (sent over TLS only), ``HttpOnly`` (no script
  reads it), ``SameSite=Strict``, ``Path=/``, no ``Domain`` (the ``__Host-`` prefix makes the
  browser enforce the last three). A token is honoured only by the node that issued it: another
  node's console finds a MAC it cannot make and sends the officer to its own login.
* **Guessing.** ``MAX_FAILURES`` failed sign-ins of one name within ``LOCK_S`` seconds lock that
  name for the rest of the window (the refusal says so, and does not check the password); every
  sign-in, failure and logout is written to the node's audit log. A used TOTP step is spent.
* **Deep links.** A page opened without a session redirects to ``login?next=<the page>``; after
  signing in the officer lands on that page. ``next`` is only ever a path of this console (no
  scheme, no host, no ``//``), so the login cannot be turned into an open redirect.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import HTTPException, Request

from console.node.totp import SecondFactor
from nodes.errors import NodeError
from nodes.services.officers import OfficerIdentity, OfficerService

COOKIE = "__Host-dcp_console"
MAX_FAILURES = 5
LOCK_S = 900.0


@dataclass(frozen=True)
class SignedIn:
    """The officer of a live console session."""

    name: str
    roles: frozenset[str]
    identity: OfficerIdentity

    @property
    def actor(self) -> str:
        """How the audit log names the officer (``officer:<name>@<node>``)."""
        return self.identity.actor


class LoginRefused(Exception):
    """A sign-in that did not succeed; ``locked`` when the name is locked for guessing."""

    def __init__(self, locked: bool = False) -> None:
        super().__init__("locked" if locked else "refused")
        self.locked = locked


def safe_next(value: str | None, root: str) -> str:
    """Where to go after signing in: ``value`` when it is a path of this console, else its home."""
    home = (root or "") + "/"
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or "\n" in value:
        return home
    if root and not (value == root or value.startswith(root + "/")):
        return home
    return value


class ConsoleLogin:
    """Sign-in, sign-out and the ``officer`` dependency of one node's console."""

    def __init__(self, officers: OfficerService, factor: SecondFactor, audit: object) -> None:
        self.officers = officers
        self.factor = factor
        self.audit = audit
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ guessing

    def _locked(self, name: str, now: float) -> bool:
        with self._lock:
            q = self._failures[name]
            while q and q[0] <= now - LOCK_S:
                q.popleft()
            return len(q) >= MAX_FAILURES

    def _failed(self, name: str, now: float) -> None:
        with self._lock:
            self._failures[name].append(now)

    def _record(self, actor: str, action: str, target: str, outcome: str = "ok", **detail: object) -> None:
        self.audit.record(actor=actor, action=action, target=target, outcome=outcome,  # type: ignore[attr-defined]
                          detail=dict(detail))

    # ------------------------------------------------------------ sign in / out

    def sign_in(self, name: str, password: str, code: str, client: str) -> str:
        """A session token for ``name`` when password and code are right (LoginRefused otherwise)."""
        now = time.time()
        name = name.strip()[:64]
        who = f"console:{name or '?'} from {client}"
        if self._locked(name, now):
            self._record(who, "console.login", name, "refused", error="Locked",
                         detail=f"{MAX_FAILURES} failed sign-ins within {LOCK_S:g}s")
            raise LoginRefused(locked=True)
        try:
            token = self.officers.login(name, password).token
        except NodeError:
            self._failed(name, now)
            self._record(who, "console.login", name, "refused", error="NotAuthenticated",
                         detail="wrong name or password, or a disabled account")
            raise LoginRefused() from None
        identity = self.officers.verify(token)
        if not self.factor.check(name, code):
            self.officers.logout(identity)  # the session the password opened ends at once
            self._failed(name, now)
            self._record(who, "console.login", name, "refused", error="SecondFactor",
                         detail="the one-time code was wrong, used before, or none is enrolled")
            raise LoginRefused()
        with self._lock:
            self._failures.pop(name, None)
        self._record(identity.actor, "console.login", name, client=client)
        return token

    def sign_out(self, who: SignedIn) -> None:
        self.officers.logout(who.identity)
        self._record(who.actor, "console.logout", who.name)

    # ------------------------------------------------------------ the dependency

    def current(self, request: Request) -> SignedIn | None:
        """The officer of the request's session cookie, or None."""
        token = request.cookies.get(COOKIE)
        if not token or len(token) > 4096:
            return None
        try:
            identity = self.officers.verify(token)
        except NodeError:
            return None
        return SignedIn(name=identity.name, roles=frozenset(identity.roles), identity=identity)

    def officer(self, request: Request) -> SignedIn:
        """Who may call a console page: a signed-in officer of this node. Without one, a page
        (GET) redirects to the login with itself as ``next``; anything else is refused (401)."""
        return self._signed_in(request, request.scope.get("root_path", "").rstrip("/"))

    def officer_for(self, login_root: str) -> Callable[[Request], SignedIn]:
        """The ``officer`` dependency of an app mounted inside the console (e.g. ``/requester``):
        the same session, but a page opened without one goes to the console's own login at
        ``login_root`` (``""``: the listener's root), with the full path of the page as ``next``."""
        def officer(request: Request) -> SignedIn:
            return self._signed_in(request, login_root.rstrip("/"))
        return officer

    def _signed_in(self, request: Request, root: str) -> SignedIn:
        who = self.current(request)
        if who is not None:
            return who
        if request.method == "GET":
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            lang = request.query_params.get("lang")  # the sign-in speaks the language the link asked for
            extra = f"&lang={quote(lang[:16], safe='')}" if lang else ""
            raise HTTPException(status_code=303, detail="sign in first",
                                headers={"Location": f"{root}/login?next={quote(here, safe='')}{extra}"})
        raise HTTPException(status_code=401, detail="sign in to the console first")
