"""Crypto throughput: SM3 / SM4-GCM (OpenSSL vs gmssl), SM2 sign/verify, BLS aggregate-verify of 18 approvals.

    .venv/bin/python bench/bench_crypto.py [--quick]

Prints one table.  Targets (issue 4): SM4-GCM ≥ 100 MB/s and SM3 ≥ 200 MB/s through OpenSSL.
gmssl has no GCM, so its SM4 row is SM4-CBC (pure Python) and is labelled so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from protocols.crypto import approvals, bls, envelope, keystore, sm2, sm3, sm4  # noqa: E402

MB = 1024 * 1024


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs (seconds)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def per_op(fn: Callable[[], object], n: int) -> float:
    """Median seconds per call over ``n`` calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes / fewer repetitions")
    args = ap.parse_args()
    big = (16 if args.quick else 64) * MB
    small = 64 * 1024
    n_sm2 = 20 if args.quick else 50
    rows: list[tuple[str, str, str, str]] = []

    data = os.urandom(big)
    sdata = data[:small]

    # SM3
    t = best_of(lambda: sm3.sm3_digest(data, "openssl"))
    rows.append(
        ("SM3", "OpenSSL (hashlib)", f"{big / MB / t:,.0f} MB/s", f"{big // MB} MiB, target ≥ 200 MB/s")
    )
    t = best_of(lambda: sm3.sm3_digest(sdata, "gmssl"), 1)
    rows.append(("SM3", "gmssl (pure Python)", f"{small / MB / t:,.2f} MB/s", f"{small // 1024} KiB"))

    # SM4
    key = sm4.new_key()
    nonce = os.urandom(12)
    t = best_of(lambda: sm4.gcm_seal(key, nonce, data))
    rows.append(
        (
            "SM4-GCM seal (one shot)",
            "OpenSSL (cryptography)",
            f"{big / MB / t:,.0f} MB/s",
            "raw GCM, no container",
        )
    )
    t = best_of(lambda: sm4.encrypt(key, data, b"ad"))
    ct = sm4.encrypt(key, data, b"ad")
    rows.append(
        (
            "SM4-GCM container encrypt",
            "OpenSSL (cryptography)",
            f"{big / MB / t:,.0f} MB/s",
            "256 KiB chunks, target ≥ 100 MB/s",
        )
    )
    t = best_of(lambda: sm4.decrypt(key, ct, b"ad"))
    rows.append(
        (
            "SM4-GCM container decrypt",
            "OpenSSL (cryptography)",
            f"{big / MB / t:,.0f} MB/s",
            "verify every chunk",
        )
    )
    with tempfile.TemporaryDirectory() as d:
        src, enc, out = Path(d) / "p", Path(d) / "c", Path(d) / "o"
        src.write_bytes(data)
        t_enc = best_of(lambda: sm4.encrypt_file(key, src, enc), 2)
        t_dec = best_of(lambda: sm4.decrypt_file(key, enc, out), 2)
    rows.append(
        (
            "SM4-GCM file encrypt / decrypt",
            "OpenSSL (cryptography)",
            f"{big / MB / t_enc:,.0f} / {big / MB / t_dec:,.0f} MB/s",
            "temp file + fsync + rename",
        )
    )
    from gmssl import sm4 as gm_sm4

    g = gm_sm4.CryptSM4()
    g.set_key(key, gm_sm4.SM4_ENCRYPT)
    t = best_of(lambda: g.crypt_cbc(nonce + bytes(4), sdata), 1)
    rows.append(
        (
            "SM4-CBC (gmssl has no GCM)",
            "gmssl (pure Python)",
            f"{small / MB / t:,.3f} MB/s",
            f"{small // 1024} KiB",
        )
    )

    # SM2
    kp = sm2.generate_keypair()
    msg = approvals.approval_message(bytes(32))
    t = per_op(lambda: sm2.sign(kp.private_key, msg, b"dept", public_key=kp.public_key), n_sm2)
    rows.append(
        ("SM2 sign (SM3, user ID)", "gmssl EC + OpenSSL SM3", f"{1 / t:,.0f} /s", f"{t * 1e3:.1f} ms each")
    )
    sig = sm2.sign(kp.private_key, msg, b"dept", public_key=kp.public_key)
    t = per_op(lambda: sm2.verify(kp.public_key, msg, sig, b"dept"), n_sm2)
    rows.append(("SM2 verify", "gmssl EC + OpenSSL SM3", f"{1 / t:,.0f} /s", f"{t * 1e3:.1f} ms each"))
    t = per_op(lambda: envelope.open_(kp.private_key, envelope.seal(kp.public_key, key)), max(5, n_sm2 // 4))
    rows.append(
        ("SM2 envelope seal+open (16 B)", "gmssl EC + OpenSSL SM3", f"{1 / t:,.0f} /s", "direct SM2 mode")
    )

    # BLS: 18 departments approve one manifest
    sks = [bls.keygen(bytes([i + 1]) * 32) for i in range(18)]
    pks = [bls.sk_to_pk(k) for k in sks]
    t_sign = per_op(lambda: bls.sign(sks[0], msg), 3)
    sigs = [bls.sign(k, msg) for k in sks]
    rows.append(
        ("BLS sign", "py_ecc (pure Python)", f"{t_sign * 1e3:,.0f} ms", "BLS12-381 G2 sig, POP suite")
    )
    t_ver = per_op(lambda: bls.verify(pks[0], msg, sigs[0]), 3)
    rows.append(("BLS verify (1 signer)", "py_ecc", f"{t_ver * 1e3:,.0f} ms", ""))
    t_agg = per_op(lambda: bls.aggregate(sigs), 3)
    rows.append(("BLS aggregate 18 signatures", "py_ecc", f"{t_agg * 1e3:,.0f} ms", ""))
    agg = bls.aggregate(sigs)
    t_fav = per_op(lambda: bls.fast_aggregate_verify(pks, msg, agg), 3)
    rows.append(
        (
            "BLS aggregate-verify, 18 approvals",
            "py_ecc",
            f"{t_fav * 1e3:,.0f} ms",
            "FastAggregateVerify, subgroup check of every key",
        )
    )
    t_fav2 = per_op(lambda: bls.fast_aggregate_verify(pks, msg, agg, keys_registered=True), 3)
    rows.append(
        (
            "BLS aggregate-verify, 18 registered keys",
            "py_ecc",
            f"{t_fav2 * 1e3:,.0f} ms",
            f"keys checked at registration; vs {18 * t_ver * 1e3:,.0f} ms for 18 single verifies",
        )
    )
    pop = bls.pop_prove(sks[0])
    t_pop = per_op(lambda: bls.pop_verify(pks[0], pop), 3)
    rows.append(
        ("BLS proof-of-possession check", "py_ecc", f"{t_pop * 1e3:,.0f} ms", "once, at registration")
    )

    # keystore
    with tempfile.TemporaryDirectory() as d:
        t_new = per_op(lambda: keystore.create_keystore(Path(d) / os.urandom(4).hex(), "bench", "pw"), 2)
        path, _ = keystore.create_keystore(d, "bench2", "pw")
        t_load = per_op(lambda: keystore.load_keystore(path, "pw"), 3)
    rows.append(
        ("keystore create (SM2+secp256k1+BLS)", "scrypt N=2^15 + SM4-GCM", f"{t_new * 1e3:,.0f} ms", "")
    )
    rows.append(("keystore load", "scrypt N=2^15 + SM4-GCM", f"{t_load * 1e3:,.0f} ms", ""))

    table = Table(title=f"dcp crypto benchmark ({os.cpu_count()} cores, {'quick' if args.quick else 'full'})")
    for col in ("operation", "implementation", "result", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
