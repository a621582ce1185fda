"""HE material bound to the authorization (protocols/he/binding.py): a signature is good for one
member, one piece of material, one job and one authorization's manifest hash — nothing else."""

from __future__ import annotations

import pytest

from protocols.crypto import sm2
from protocols.he.binding import MaterialNotSigned, sign_material, verify_material

JOB, MH, FP = "job-1", "ab" * 32, "cd" * 32


@pytest.fixture(scope="module")
def keys():
    return {m: sm2.generate_keypair() for m in ("bank", "tax", "outsider")}


def test_the_signer_s_own_material_verifies(keys):
    sig = sign_material(keys["bank"].private_key, "context", JOB, MH, "bank", FP)
    verify_material(keys["bank"].public_key, "context", JOB, MH, "bank", FP, sig)
    verify_material(keys["bank"].public_key, "context", JOB, MH.upper(), "bank", FP.upper(), sig)  # hex case


@pytest.mark.parametrize("change", [
    {"what": "mask_key"}, {"job_id": "job-2"}, {"manifest_hash": "ef" * 32}, {"member": "tax"}, {"value": "00" * 32},
])
def test_a_signature_is_good_for_nothing_else(keys, change):
    sig = sign_material(keys["bank"].private_key, "context", JOB, MH, "bank", FP)
    args = {"what": "context", "job_id": JOB, "manifest_hash": MH, "member": "bank", "value": FP, **change}
    with pytest.raises(MaterialNotSigned):
        verify_material(keys["bank"].public_key, args["what"], args["job_id"], args["manifest_hash"], args["member"],
                        args["value"], sig)


@pytest.mark.parametrize("sig", [None, "", "zz", "00" * 64, "ab" * 63])
def test_missing_or_malformed_signatures_are_refused(keys, sig):
    with pytest.raises(MaterialNotSigned):
        verify_material(keys["tax"].public_key, "mask_key", JOB, MH, "tax", FP, sig)


def test_an_outsider_s_key_standing_in_for_a_member_is_refused(keys):
    sig = sign_material(keys["outsider"].private_key, "mask_key", JOB, MH, "tax", FP)  # signed "as tax"
    with pytest.raises(MaterialNotSigned, match="not signed by tax"):
        verify_material(keys["tax"].public_key, "mask_key", JOB, MH, "tax", FP, sig)
    with pytest.raises(MaterialNotSigned, match="not an active member"):
        verify_material(None, "mask_key", JOB, MH, "tax", FP, sig)
