"""Named errors of the 国密 / BLS / keystore layer.

Every failure a caller can cause (a wrong passphrase, a truncated or tampered
ciphertext, a malformed key, a signature of the wrong length …) raises one of
these, never a bare ``ValueError`` from a library underneath.  All derive from
:class:`CryptoError` so a service can map the whole family to one 4xx answer.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by :mod:`protocols.crypto`."""


class MalformedKey(CryptoError):
    """A key has the wrong length, is not on the curve, or is out of range."""


class BadSignatureLength(CryptoError):
    """A signature does not have the length its scheme requires."""


class InvalidSignature(CryptoError):
    """A well-formed signature does not verify for this key and message."""


class InvalidProofOfPossession(InvalidSignature):
    """A BLS public key came without a valid proof of possession (rogue-key defence)."""


RogueKey = InvalidProofOfPossession


class MalformedCiphertext(CryptoError):
    """A ciphertext or encrypted file does not have the expected structure (bad magic, version …)."""


class CiphertextTruncated(MalformedCiphertext):
    """A ciphertext ends before its last authenticated chunk / tag."""


class AuthenticationFailed(CryptoError):
    """An authentication tag does not match: the ciphertext, its header or its associated data changed."""


TagMismatch = AuthenticationFailed


class DecryptionFailed(CryptoError):
    """Public-key decryption (SM2) failed: wrong key or corrupted ciphertext."""


class WrongPassphrase(CryptoError):
    """The passphrase does not open this keystore."""


class MalformedKeystore(CryptoError):
    """A keystore file is not valid JSON of the expected schema."""


class KeystoreExists(CryptoError):
    """Refusing to overwrite an existing keystore."""


class ApprovalError(CryptoError):
    """Base class of approval verification failures."""


class ManifestMismatch(ApprovalError):
    """The approval was made for a different manifest (the manifest was tampered with)."""


class WrongSigner(ApprovalError):
    """The approval is not signed by the member it claims, or not by the expected member."""


class ReplayedApproval(ApprovalError):
    """The approval was made for another job and is being replayed."""


class InvalidMemberName(CryptoError):
    """A member name is empty, too long, or has characters outside ``[A-Za-z0-9._-]``."""
