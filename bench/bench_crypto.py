"""Crypto throughput: SM3 / SM4-GCM (OpenSSL vs gmssl), SM2 sign/verify, BLS aggregate-verify of 18 approvals.

    .venv/bin/python bench/bench_crypto.py [--quick] [--only sym,sm2,bls,keystore]

Prints one table with the load average at start and end.  Targets: SM4-GCM ≥ 100 MB/s and
SM3 ≥ 200 MB/s through OpenSSL (issue 4); SM2 ≥ 1,000 signs/s and verifies/s natively, next to
``openssl speed sm2``, and BLS aggregate-verify of 18 approvals ≤ 20 ms (issue 19).
gmssl has no GCM, so its SM4 row is SM4-CBC (pure Python) and is labelled so.

Rates are given per wall-clock second and per CPU second of this process: ``openssl speed``
reports CPU time unless ``-elapsed`` (both rows are printed), and on a shared 2-core machine the
two differ by the load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
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


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(calls per wall-clock second, calls per CPU second) of ``fn`` run for about ``seconds``."""
    fn()
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            return n / wall, n / max(time.process_time() - cpu0, 1e-9)


def openssl_speed_sm2(seconds: int, elapsed: bool) -> tuple[float, float] | None:
    """(signs/s, verifies/s) from ``openssl speed sm2`` (CPU time unless ``elapsed``), or None."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-seconds", str(seconds), *(["-elapsed"] if elapsed else []), "sm2"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"SM2.*\s([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            return float(m.group(1)), float(m.group(2))
    return None


def _per_s(wall: float, cpu: float) -> str:
    return f"{wall:,.0f} /s (CPU {cpu:,.0f} /s)"


def sm2_rows(key: bytes, seconds: float, n_gmssl: int) -> list[tuple[str, str, str, str]]:
    """SM2 sign / verify / envelope: Tongsuo (native), ``openssl speed sm2``, gmssl."""
    rows: list[tuple[str, str, str, str]] = []
    kp = sm2.generate_keypair()
    msg = approvals.approval_message(bytes(32))
    secs = max(1, round(seconds))
    for elapsed in (False, True):
        got = openssl_speed_sm2(secs, elapsed)
        if got is not None:
            what = "wall clock (-elapsed)" if elapsed else "CPU time (its default)"
            rows.append(
                ("SM2 sign / verify", "openssl speed sm2 (CLI)", f"{got[0]:,.0f} / {got[1]:,.0f} /s", what)
            )
    ver = openssl_version()
    for backend, label in (("native", "Tongsuo (tongsuopy)"), ("gmssl", "gmssl (pure Python)")):
        run = (lambda f: rate(f, seconds)) if backend == "native" else (lambda f: _rate_n(f, n_gmssl))
        w, c = run(
            lambda b=backend: sm2.sign(kp.private_key, msg, b"dept", public_key=kp.public_key, backend=b)
        )
        rows.append(
            ("SM2 sign (SM3, user ID)", label, _per_s(w, c), "e = SM3(Z_A || M), r||s out, CSPRNG nonce")
        )
        sig = sm2.sign(kp.private_key, msg, b"dept", public_key=kp.public_key)
        w, c = run(lambda b=backend, sg=sig: sm2.verify(kp.public_key, msg, sg, b"dept", backend=b))
        rows.append(("SM2 verify", label, _per_s(w, c), "key checked on the curve each call"))
    w, c = rate(lambda: envelope.open_(kp.private_key, envelope.seal(kp.public_key, key)), seconds)
    rows.append(
        ("SM2 envelope seal+open (16 B)", "Tongsuo EC + OpenSSL SM3", _per_s(w, c), "direct SM2 mode")
    )
    w, c = _rate_n(
        lambda: sm2.decrypt(
            kp.private_key, sm2.encrypt(kp.public_key, key, backend="gmssl"), backend="gmssl"
        ),
        max(5, n_gmssl // 4),
    )
    rows.append(("SM2 encrypt+decrypt (16 B)", "gmssl EC + OpenSSL SM3", _per_s(w, c), f"openssl CLI: {ver}"))
    return rows


def openssl_version() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        return "none"
    return subprocess.run([exe, "version"], capture_output=True, text=True).stdout.split(" (")[0].strip()


def _rate_n(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Like :func:`rate` for slow calls: ``n`` calls."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - wall0), n / max(time.process_time() - cpu0, 1e-9)


def _ms(fn: Callable[[], object], n: int, budget: float = 0.0) -> str:
    """Mean wall and CPU milliseconds per call over ``n`` calls, or fewer (≥ 3) once ``budget`` s pass."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    done = 0
    while done < n and not (budget and done >= 3 and time.perf_counter() - wall0 >= budget):
        fn()
        done += 1
    wall, cpu = (time.perf_counter() - wall0) / done, (time.process_time() - cpu0) / done
    return f"{wall * 1e3:,.1f} ms (CPU {cpu * 1e3:,.1f})"


def bls_rows(repeat_py: int, seconds: float) -> list[tuple[str, str, str, str]]:
    """BLS12-381 (POP ciphersuite) through blspy (native, blst) and py_ecc, 18 approvers."""
    rows: list[tuple[str, str, str, str]] = []
    msg = approvals.approval_message(bytes(32))
    sks = [bls.keygen(bytes([i + 1]) * 32) for i in range(18)]
    pks = [bls.sk_to_pk(k) for k in sks]
    sigs = [bls.sign(k, msg) for k in sks]
    agg = bls.aggregate(sigs)
    for backend, label in (("native", "blspy (blst)"), ("py_ecc", "py_ecc (pure Python)")):
        n = 1000 if backend == "native" else repeat_py
        budget = seconds if backend == "native" else 0.0
        rows.append(
            (
                "BLS sign",
                label,
                _ms(lambda b=backend: bls.sign(sks[0], msg, backend=b), n, budget),
                "POP suite",
            )
        )
        rows.append(
            (
                "BLS verify (1 signer)",
                label,
                _ms(lambda b=backend: bls.verify(pks[0], msg, sigs[0], backend=b), n, budget),
                "",
            )
        )
        rows.append(
            (
                "BLS aggregate 18 signatures",
                label,
                _ms(lambda b=backend: bls.aggregate(sigs, backend=b), n, budget),
                "",
            )
        )
        rows.append(
            (
                "BLS aggregate-verify, 18 approvals",
                label,
                _ms(lambda b=backend: bls.fast_aggregate_verify(pks, msg, agg, backend=b), n, budget),
                "FastAggregateVerify, every key validated; target ≤ 20 ms",
            )
        )
        rows.append(
            (
                "BLS aggregate-verify, 18 registered keys",
                label,
                _ms(
                    lambda b=backend: bls.fast_aggregate_verify(
                        pks, msg, agg, keys_registered=True, backend=b
                    ),
                    n,
                    budget,
                ),
                "py_ecc: only the sum validated; native: the sum cached per key set",
            )
        )
    pop = bls.pop_prove(sks[0])
    for backend, label in (("native", "blspy (blst)"), ("py_ecc", "py_ecc (pure Python)")):
        n = 1000 if backend == "native" else repeat_py
        budget = seconds if backend == "native" else 0.0
        rows.append(
            (
                "BLS proof of possession: prove",
                label,
                _ms(lambda b=backend: bls.pop_prove(sks[0], backend=b), n, budget),
                "once per key",
            )
        )
        rows.append(
            (
                "BLS proof of possession: check",
                label,
                _ms(lambda b=backend: bls.pop_verify(pks[0], pop, backend=b), n, budget),
                "once per registration",
            )
        )
    rows.append(
        ("BLS signature → EIP-2537 (256 B)", "py_ecc", _ms(lambda: bls.to_eip2537_g2(agg), repeat_py), "")
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes / fewer repetitions")
    ap.add_argument("--only", default="sym,sm2,bls,keystore", help="comma-separated sections to run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    big = (16 if args.quick else 64) * MB
    small = 64 * 1024
    n_sm2 = 20 if args.quick else 50
    rows: list[tuple[str, str, str, str]] = []
    load0 = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    key = sm4.new_key()
    if "sym" in only:
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

    if "sm2" in only:  # native (Tongsuo) next to the openssl CLI and gmssl
        rows.extend(sm2_rows(key, seconds=1.0 if args.quick else 3.0, n_gmssl=n_sm2))
    if "bls" in only:  # native (blspy) next to py_ecc; 18 departments approve one manifest
        rows.extend(bls_rows(repeat_py=2, seconds=0.5 if args.quick else 2.0))

    if "keystore" in only:
        # keystore
        with tempfile.TemporaryDirectory() as d:
            t_new = per_op(lambda: keystore.create_keystore(Path(d) / os.urandom(4).hex(), "bench", "pw"), 2)
            path, _ = keystore.create_keystore(d, "bench2", "pw")
            t_load = per_op(lambda: keystore.load_keystore(path, "pw"), 3)
        rows.append(
            ("keystore create (SM2+secp256k1+BLS)", "scrypt N=2^15 + SM4-GCM", f"{t_new * 1e3:,.0f} ms", "")
        )
        rows.append(("keystore load", "scrypt N=2^15 + SM4-GCM", f"{t_load * 1e3:,.0f} ms", ""))

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    table = Table(
        title=f"dcp crypto benchmark ({os.cpu_count()} cores, {'quick' if args.quick else 'full'}, "
        f"load average at start {load0}, at end {load})"
    )
    for col in ("operation", "implementation", "result", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
