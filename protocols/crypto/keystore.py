"""Member keystores: an SM2 identity key, a secp256k1 chain account and a BLS12-381 key per member.

A keystore is one JSON file (``<member>.keystore.json``)::

    {
      "format": "dcp-keystore", "version": 1,
      "public": {member, key_version, created_at, sm2_user_id, sm2_public_key, chain_address,
                 bls_public_key, bls_pop},                       # in clear: what the Registry needs
      "kdf": {"name": "scrypt", "salt", "n", "r", "p"},         # passphrase → 32 bytes
      "check": SM3(derived[16:32]),                              # tells a wrong passphrase from tampering
      "cipher": "SM4-GCM",
      "ciphertext": SM4-GCM container (protocols.crypto.sm4) of the secrets JSON under derived[0:16],
                    associated data = canonical JSON of {format, version, public, kdf}
    }

so the public parts cannot be swapped without the decryption failing.  Writes are atomic
(temp file in the same directory, fsync, ``os.replace``, fsync of the directory): a failure
never leaves a half-written keystore, and :func:`rotate_keystore` archives the old file
before the new one replaces it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.crypto import bls, sm2, sm4
from protocols.crypto.errors import (
    AuthenticationFailed,
    CiphertextTruncated,
    InvalidMemberName,
    KeystoreExists,
    MalformedCiphertext,
    MalformedKey,
    MalformedKeystore,
    WrongPassphrase,
)
from protocols.crypto.sm3 import sm3_digest

FORMAT = "dcp-keystore"
VERSION = 1
SUFFIX = ".keystore.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: A keystore may not ask for more scrypt memory than this (a hostile file cannot exhaust RAM).
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024


def check_member_name(member: str) -> str:
    """Return ``member`` if it is a valid member name, else :class:`InvalidMemberName`."""
    if not isinstance(member, str) or not _NAME.match(member):
        raise InvalidMemberName(
            f"member name {member!r} must be 1-64 characters of [A-Za-z0-9._-] starting with a letter or digit"
        )
    return member


class KdfParams(BaseModel):
    """scrypt parameters stored with the keystore."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["scrypt"] = "scrypt"
    salt: str
    n: int = Field(default=2**15, ge=2**10, le=2**20)
    r: int = Field(default=8, ge=1, le=32)
    p: int = Field(default=1, ge=1, le=16)

    @field_validator("n")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("scrypt n must be a power of two")
        return v

    @model_validator(mode="after")
    def _memory_bound(self) -> KdfParams:
        if 128 * self.n * self.r > MAX_SCRYPT_MEMORY:
            raise ValueError(f"scrypt parameters need more than {MAX_SCRYPT_MEMORY >> 20} MiB")
        if len(bytes.fromhex(self.salt)) < 16:
            raise ValueError("scrypt salt must be at least 16 bytes")
        return self

    def derive(self, passphrase: str) -> bytes:
        """32 bytes from the passphrase: ``[0:16]`` SM4 key, ``[16:32]`` passphrase check."""
        return hashlib.scrypt(
            passphrase.encode("utf-8"),
            salt=bytes.fromhex(self.salt),
            n=self.n,
            r=self.r,
            p=self.p,
            dklen=32,
            maxmem=256 * self.n * self.r + (1 << 20),
        )


class PublicIdentity(BaseModel):
    """The public half of a member's keys — what ``dcp keys export-public`` gives the Registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    member: str
    key_version: int = Field(ge=1)
    created_at: datetime
    sm2_user_id: str
    sm2_public_key: str  # 128 hex chars: x || y
    chain_address: str  # EIP-55 checksummed
    bls_public_key: str  # 96 hex chars: compressed G1
    bls_pop: str  # 192 hex chars: proof of possession (compressed G2)

    @field_validator("member")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_member_name(v)
        except InvalidMemberName as exc:
            raise ValueError(str(exc)) from exc

    def verify(self) -> None:
        """Check that the keys are well formed and the BLS proof of possession holds."""
        sm2.validate_public_key(bytes.fromhex(self.sm2_public_key))
        bls.register_key(bytes.fromhex(self.bls_public_key), bytes.fromhex(self.bls_pop))


class _Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sm2_private_key: str
    chain_private_key: str
    bls_secret_key: str


class KeystoreFile(BaseModel):
    """The on-disk JSON document."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["dcp-keystore"] = FORMAT
    version: Literal[1] = VERSION
    public: PublicIdentity
    kdf: KdfParams
    check: str
    cipher: Literal["SM4-GCM"] = "SM4-GCM"
    ciphertext: str

    def associated_data(self) -> bytes:
        """Canonical bytes of everything in clear that the ciphertext is bound to."""
        doc = {
            "format": self.format,
            "version": self.version,
            "public": self.public.model_dump(mode="json"),
            "kdf": self.kdf.model_dump(mode="json"),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class MemberKeys:
    """A member's decrypted keys.  ``repr`` never shows secrets."""

    public: PublicIdentity
    sm2: sm2.Sm2KeyPair = field(repr=False)
    chain_private_key: bytes = field(repr=False)
    bls_secret_key: int = field(repr=False)

    @property
    def member(self) -> str:
        """The member name."""
        return self.public.member

    @property
    def sm2_user_id(self) -> bytes:
        """The SM2 distinguishing ID used in Z_A."""
        return self.public.sm2_user_id.encode("utf-8")

    @property
    def bls_public_key(self) -> bytes:
        """48-byte compressed BLS public key."""
        return bytes.fromhex(self.public.bls_public_key)


def _chain_address(private_key: bytes) -> str:
    from eth_account import Account

    try:
        return Account.from_key(private_key).address
    except (ValueError, TypeError) as exc:
        raise MalformedKey(f"invalid secp256k1 private key: {exc}") from exc


def generate_member_keys(member: str, *, key_version: int = 1, sm2_user_id: str | None = None) -> MemberKeys:
    """Fresh SM2, secp256k1 and BLS keys for ``member`` (the SM2 user ID defaults to the member name)."""
    check_member_name(member)
    sm2_kp = sm2.generate_keypair()
    while True:
        chain_key = secrets.token_bytes(32)
        if (
            0
            < int.from_bytes(chain_key, "big")
            < 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
        ):
            break
    bls_sk = bls.keygen()
    public = PublicIdentity(
        member=member,
        key_version=key_version,
        created_at=datetime.now(timezone.utc).replace(microsecond=0),
        sm2_user_id=sm2_user_id or member,
        sm2_public_key=sm2_kp.public_key.hex(),
        chain_address=_chain_address(chain_key),
        bls_public_key=bls.sk_to_pk(bls_sk).hex(),
        bls_pop=bls.pop_prove(bls_sk).hex(),
    )
    return MemberKeys(public=public, sm2=sm2_kp, chain_private_key=chain_key, bls_secret_key=bls_sk)


def keystore_path(directory: str | os.PathLike[str], member: str) -> Path:
    """``<directory>/<member>.keystore.json``."""
    return Path(directory) / f"{check_member_name(member)}{SUFFIX}"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def encrypt_keys(keys: MemberKeys, passphrase: str, *, scrypt_n: int = 2**15) -> KeystoreFile:
    """Build the keystore document for ``keys`` under ``passphrase``."""
    if not passphrase:
        raise WrongPassphrase("an empty passphrase is not allowed")
    kdf = KdfParams(salt=secrets.token_hex(16), n=scrypt_n)
    derived = kdf.derive(passphrase)
    body = _Secrets(
        sm2_private_key=keys.sm2.private_key.hex(),
        chain_private_key=keys.chain_private_key.hex(),
        bls_secret_key=bls.sk_to_bytes(keys.bls_secret_key).hex(),
    )
    doc = KeystoreFile(public=keys.public, kdf=kdf, check=sm3_digest(derived[16:]).hex(), ciphertext="")
    ct = sm4.encrypt(derived[:16], body.model_dump_json().encode(), doc.associated_data())
    return doc.model_copy(update={"ciphertext": ct.hex()})


def save_keystore(
    keys: MemberKeys,
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    overwrite: bool = False,
    scrypt_n: int = 2**15,
) -> Path:
    """Encrypt and atomically write ``keys`` to ``path``; :class:`KeystoreExists` unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeystoreExists(f"{path} exists; refusing to overwrite it (use rotate)")
    doc = encrypt_keys(keys, passphrase, scrypt_n=scrypt_n)
    _atomic_write(path, (doc.model_dump_json(indent=2) + "\n").encode())
    return path


def read_keystore_file(path: str | os.PathLike[str]) -> KeystoreFile:
    """Parse (not decrypt) a keystore file; :class:`MalformedKeystore` if it is not one."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise MalformedKeystore(f"no keystore at {path}") from exc
    try:
        return KeystoreFile.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedKeystore(
            f"{path} is not a valid dcp keystore: {exc.error_count()} problem(s): "
            f"{exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"
        ) from exc


def read_public(path: str | os.PathLike[str]) -> PublicIdentity:
    """The public identity of a keystore (no passphrase needed)."""
    return read_keystore_file(path).public


def decrypt_keys(doc: KeystoreFile, passphrase: str) -> MemberKeys:
    """Open a keystore document; :class:`WrongPassphrase`, or :class:`AuthenticationFailed` if tampered."""
    derived = doc.kdf.derive(passphrase)
    if not hmac.compare_digest(sm3_digest(derived[16:]).hex(), doc.check):
        raise WrongPassphrase("wrong passphrase for this keystore")
    try:
        ct = bytes.fromhex(doc.ciphertext)
    except ValueError as exc:
        raise MalformedKeystore("keystore ciphertext is not hex") from exc
    try:
        plain = sm4.decrypt(derived[:16], ct, doc.associated_data())
    except (CiphertextTruncated, MalformedCiphertext) as exc:
        raise MalformedKeystore(f"keystore ciphertext is damaged: {exc}") from exc
    except AuthenticationFailed as exc:
        raise AuthenticationFailed("keystore was modified (public part or ciphertext)") from exc
    body = _Secrets.model_validate_json(plain)
    sm2_priv = bytes.fromhex(body.sm2_private_key)
    keys = MemberKeys(
        public=doc.public,
        sm2=sm2.Sm2KeyPair(private_key=sm2_priv, public_key=sm2.public_key_from_private(sm2_priv)),
        chain_private_key=bytes.fromhex(body.chain_private_key),
        bls_secret_key=bls.sk_from_bytes(bytes.fromhex(body.bls_secret_key)),
    )
    _check_consistent(keys)
    return keys


def _check_consistent(keys: MemberKeys) -> None:
    pub = keys.public
    if keys.sm2.public_key.hex() != pub.sm2_public_key:
        raise MalformedKeystore("SM2 public key does not match the private key")
    if _chain_address(keys.chain_private_key) != pub.chain_address:
        raise MalformedKeystore("chain address does not match the private key")
    if bls.sk_to_pk(keys.bls_secret_key).hex() != pub.bls_public_key:
        raise MalformedKeystore("BLS public key does not match the secret key")


def load_keystore(path: str | os.PathLike[str], passphrase: str) -> MemberKeys:
    """Read and decrypt a keystore file."""
    return decrypt_keys(read_keystore_file(path), passphrase)


def create_keystore(
    directory: str | os.PathLike[str],
    member: str,
    passphrase: str,
    *,
    scrypt_n: int = 2**15,
    sm2_user_id: str | None = None,
) -> tuple[Path, MemberKeys]:
    """Generate keys for ``member`` and write ``<directory>/<member>.keystore.json`` (never overwrites)."""
    path = keystore_path(directory, member)
    if path.exists():
        raise KeystoreExists(f"{path} exists; use `dcp keys rotate` to replace its keys")
    keys = generate_member_keys(member, sm2_user_id=sm2_user_id)
    save_keystore(keys, path, passphrase, scrypt_n=scrypt_n)
    return path, keys


def rotate_keystore(
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    new_passphrase: str | None = None,
    scrypt_n: int | None = None,
) -> tuple[MemberKeys, Path]:
    """Replace a member's keys with fresh ones (same member name, ``key_version + 1``).

    The old keystore is first copied to ``<dir>/archive/<member>.v<version>.<timestamp>.keystore.json``;
    then the new one atomically replaces it.  Returns the new keys and the archive path.
    """
    path = Path(path)
    doc = read_keystore_file(path)
    old = decrypt_keys(doc, passphrase)  # proves the caller holds the passphrase
    new = generate_member_keys(
        old.member, key_version=old.public.key_version + 1, sm2_user_id=old.public.sm2_user_id
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    archive = path.parent / "archive" / f"{old.member}.v{old.public.key_version}.{stamp}{SUFFIX}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(archive, path.read_bytes())
    save_keystore(
        new,
        path,
        new_passphrase or passphrase,
        overwrite=True,
        scrypt_n=scrypt_n if scrypt_n is not None else doc.kdf.n,
    )
    return new, archive


def export_public(path: str | os.PathLike[str]) -> PublicIdentity:
    """The public identity, checked (valid SM2 point, valid BLS proof of possession) before it is exported."""
    public = read_public(path)
    try:
        public.verify()
    except ValueError as exc:  # bytes.fromhex on a damaged field
        raise MalformedKeystore(f"public part is not valid hex: {exc}") from exc
    return public


__all__ = [
    "KdfParams",
    "KeystoreFile",
    "MemberKeys",
    "PublicIdentity",
    "check_member_name",
    "create_keystore",
    "decrypt_keys",
    "encrypt_keys",
    "export_public",
    "generate_member_keys",
    "keystore_path",
    "load_keystore",
    "read_keystore_file",
    "read_public",
    "rotate_keystore",
    "save_keystore",
]
