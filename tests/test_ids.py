import random

import pytest

from common.ids import (
    id_check_char,
    is_valid_resident_id,
    is_valid_uscc,
    org_code_check_char,
    random_uscc,
    uscc_check_char,
)


def test_uscc_known_code():
    # A published example code (Fuzhou); its check character is 3.
    assert uscc_check_char("91350100M000100Y4") == "3"
    assert is_valid_uscc("91350100M000100Y43")
    assert not is_valid_uscc("91350100M000100Y44")
    assert not is_valid_uscc("91350100M000100Y4")  # too short
    assert not is_valid_uscc("91350100M000100O43")  # O is not in the alphabet
    assert not is_valid_uscc(None)


def test_org_code_check():
    # positions 9-17 of the published USCC above form the organization code M000100Y-4
    assert org_code_check_char("M000100Y") == "4"


def test_random_uscc_valid_and_single_char_error_detected():
    rng = random.Random(7)
    for _ in range(200):
        code = random_uscc(rng)
        assert is_valid_uscc(code)
        # any single substitution in the body breaks the check
        i = rng.randrange(17)
        c = next(ch for ch in "0123456789ABCDEFGHJKLMNPQRTUWXY" if ch != code[i])
        assert not is_valid_uscc(code[:i] + c + code[i + 1 :])


def test_resident_id_standard_example():
    assert id_check_char("11010519491231002") == "X"
    assert is_valid_resident_id("11010519491231002X")
    assert is_valid_resident_id("11010519491231002x")
    assert not is_valid_resident_id("110105194912310021")
    with pytest.raises(ValueError):
        id_check_char("1101051949123100")
