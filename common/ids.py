"""Identifier check characters used across the platform.

* Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters over the
  31-character alphabet without I, O, S, V, Z; position 18 is a mod-31 check character.
  Positions 9–17 are the organization code (GB 11714), with its own mod-11 check.
* Resident identity number (GB 11643-1999): 17 digits and a mod-11 check character.
"""

from __future__ import annotations

import random

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def uscc_check_char(first17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters of a USCC."""
    if len(first17) != 17 or any(c not in _USCC_VALUE for c in first17):
        raise ValueError(f"not 17 USCC characters: {first17!r}")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def org_code_check_char(first8: str) -> str:
    """The GB 11714 check character for an 8-character organization code body."""
    if len(first8) != 8 or not all(c.isdigit() or "A" <= c <= "Z" for c in first8):
        raise ValueError(f"not an 8-character organization code body: {first8!r}")
    total = sum((int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(first8, _ORG_WEIGHTS, strict=True))
    r = 11 - total % 11
    return "X" if r == 10 else "0" if r == 11 else str(r)


def is_valid_uscc(code: object) -> bool:
    """True when ``code`` is an 18-character USCC whose check character is right."""
    if not isinstance(code, str) or len(code) != 18:
        return False
    code = code.upper()
    if any(c not in _USCC_VALUE for c in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


def random_uscc(rng: random.Random, region: str = "330100") -> str:
    """A valid USCC for an enterprise (registration office 9, type 1) in ``region``."""
    body = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    org = body + org_code_check_char(body)
    first17 = "91" + region + org
    if any(c not in _USCC_VALUE for c in first17):  # org check 'X' is fine; guard anyway
        return random_uscc(rng, region)
    return first17 + uscc_check_char(first17)


def id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"not 17 digits: {first17!r}")
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def is_valid_resident_id(code: object) -> bool:
    """True when ``code`` is an 18-character resident ID whose check character is right."""
    if not isinstance(code, str) or len(code) != 18 or not code[:17].isdigit():
        return False
    return id_check_char(code[:17]) == code[17].upper()
