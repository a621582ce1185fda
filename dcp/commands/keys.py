"""``dcp keys``: member keystores (SM2 identity, chain account, BLS key) — create, show, rotate, export."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

PASSPHRASE_ENV = "DCP_KEYSTORE_PASSPHRASE"


def _default_dir() -> Path:
    from common.settings import DcpSettings

    return DcpSettings().work_dir / "keys"


def _passphrase(
    passphrase_file: Path | None, *, confirm: bool = False, prompt: str = "Keystore passphrase"
) -> str:
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            typer.echo(f"cannot read passphrase file: {exc}", err=True)
            raise typer.Exit(2) from None
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def _resolve(keystore: Path | None, member: str | None, directory: Path | None) -> Path:
    if keystore is not None:
        return keystore
    if member is None:
        typer.echo("name the keystore: --keystore PATH or --member NAME [--dir DIR]", err=True)
        raise typer.Exit(2)
    from protocols.crypto.errors import CryptoError
    from protocols.crypto.keystore import keystore_path

    try:
        return keystore_path(directory or _default_dir(), member)
    except CryptoError as exc:
        raise _fail(exc) from None


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"{type(exc).__name__}: {exc}", err=True)
    return typer.Exit(2)


def _summary(public: object, path: Path) -> str:
    p = public  # PublicIdentity
    return "\n".join(
        [
            f"keystore      {path}",
            f"member        {p.member}  (key version {p.key_version}, created {p.created_at.isoformat()})",
            f"sm2 user id   {p.sm2_user_id}",
            f"sm2 public    {p.sm2_public_key}",
            f"chain address {p.chain_address}",
            f"bls public    {p.bls_public_key}",
        ]
    )


def _write_tls(path: Path, keys: object) -> str:
    """Write the member's 国密 TLS certificate and key PEM (0600) beside its keystore; the lines to print."""
    from protocols.gmtls.certs import write_credentials

    cert, key = write_credentials(path.parent, keys.member, keys.sm2.private_key)  # MemberKeys
    return f"tls cert      {cert}\ntls key       {key}  (0600; the SM2 identity key, unencrypted)"


def _keys_then_cert(make: Callable[[], tuple[Path, Any, list[str]]], summary: bool = True) -> tuple[Path, Any]:
    """Run ``make()`` (the keystore step of new/rotate/cert: its path, the MemberKeys and lines to add),
    refusing a CryptoError/ValueError by name; print the public summary (unless ``summary`` is False)
    and the lines; then (re)write the member's 国密 TLS certificate beside the keystore."""
    from protocols.crypto.errors import CryptoError

    try:
        path, keys, lines = make()
    except (CryptoError, ValueError) as exc:
        raise _fail(exc) from None
    if summary:
        typer.echo(_summary(keys.public, path))
    for line in lines:
        typer.echo(line)
    typer.echo(_write_tls(path, keys))
    return path, keys


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to the CLI."""
    keys = typer.Typer(
        help="Member keystores: SM2 identity, chain account and BLS key (SM4-GCM encrypted).",
        no_args_is_help=True,
    )
    app.add_typer(keys, name="keys")

    keystore_opt = typer.Option(None, "--keystore", "-k", help="keystore file")
    member_opt = typer.Option(None, "--member", "-m", help="member name (file <dir>/<member>.keystore.json)")
    dir_opt = typer.Option(None, "--dir", help="keystore directory (default: <work_dir>/keys)")
    pass_opt = typer.Option(
        None, "--passphrase-file", help=f"file holding the passphrase (else ${PASSPHRASE_ENV}, else a prompt)"
    )

    @keys.command("new")
    def new(
        member: str = typer.Option(..., "--member", "-m", help="member name, e.g. tax-bureau"),
        out: Path = typer.Option(
            None, "--out", help="directory to write the keystore to (default: <work_dir>/keys)"
        ),
        sm2_user_id: str = typer.Option(None, help="SM2 distinguishing ID (default: the member name)"),
        passphrase_file: Path = pass_opt,
        kdf_cost: int = typer.Option(2**15, help="scrypt N (power of two, 2^10..2^20)"),
        export: Path = typer.Option(None, "--export", help="also write the public identity JSON here "
                                    "(what `dcp keys export-public` prints: hand it to governance)"),
    ) -> None:
        """Create a keystore with fresh SM2, secp256k1 and BLS keys, and the member's 国密 TLS certificate.

        The certificate carries the SM2 identity key (self-signed by it); it sits beside the keystore as
        ``<member>.tls.crt`` with the key as ``<member>.tls.key`` (0600)."""
        from protocols.crypto.keystore import create_keystore, export_public

        passphrase = _passphrase(passphrase_file, confirm=True)
        path, _ = _keys_then_cert(lambda: (*create_keystore(
            out or _default_dir(), member, passphrase, scrypt_n=kdf_cost, sm2_user_id=sm2_user_id), []))
        if export is not None:  # what `dcp keys export-public -o FILE` writes
            export.write_text(json.dumps(export_public(path).model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
            typer.echo(f"public        {export}")

    @keys.command("show")
    def show(
        keystore: Path = keystore_opt,
        member: str = member_opt,
        directory: Path = dir_opt,
        check: bool = typer.Option(False, "--check", help="also decrypt it (asks for the passphrase)"),
        passphrase_file: Path = pass_opt,
    ) -> None:
        """Show a keystore's public identity (and, with --check, prove the passphrase opens it)."""
        from protocols.crypto.errors import CryptoError
        from protocols.crypto.keystore import load_keystore, read_public

        path = _resolve(keystore, member, directory)
        try:
            public = read_public(path)
            if check:
                load_keystore(path, _passphrase(passphrase_file))
        except CryptoError as exc:
            raise _fail(exc) from None
        typer.echo(_summary(public, path))
        if check:
            typer.echo("passphrase    ok (secrets decrypted and consistent with the public keys)")

    @keys.command("rotate")
    def rotate(
        keystore: Path = keystore_opt,
        member: str = member_opt,
        directory: Path = dir_opt,
        passphrase_file: Path = pass_opt,
        new_passphrase_file: Path = typer.Option(None, help="file with a new passphrase (default: keep it)"),
    ) -> None:
        """Replace the member's keys with fresh ones; the old keystore is archived next to it."""
        from protocols.crypto.keystore import rotate_keystore

        path = _resolve(keystore, member, directory)
        passphrase = _passphrase(passphrase_file)
        new_pass = (
            new_passphrase_file.read_text(encoding="utf-8").rstrip("\r\n") if new_passphrase_file else None
        )

        def rotate_() -> tuple[Path, object, list[str]]:
            rotated, archive = rotate_keystore(path, passphrase, new_passphrase=new_pass)
            return path, rotated, [f"archived      {archive}"]

        _keys_then_cert(rotate_)

    @keys.command("cert")
    def cert(
        keystore: Path = keystore_opt,
        member: str = member_opt,
        directory: Path = dir_opt,
        passphrase_file: Path = pass_opt,
    ) -> None:
        """(Re)write the member's 国密 TLS certificate and key PEM beside its keystore (SM2 identity key)."""
        from protocols.crypto.keystore import load_keystore

        path = _resolve(keystore, member, directory)
        _keys_then_cert(lambda: (path, load_keystore(path, _passphrase(passphrase_file)), []), summary=False)

    @keys.command("export-public")
    def export_public_cmd(
        keystore: Path = keystore_opt,
        member: str = member_opt,
        directory: Path = dir_opt,
        out: Path = typer.Option(None, "--out", "-o", help="write the JSON here instead of stdout"),
    ) -> None:
        """Print the public identity JSON the Registry needs (proof of possession checked first)."""
        from protocols.crypto.errors import CryptoError
        from protocols.crypto.keystore import export_public

        path = _resolve(keystore, member, directory)
        try:
            public = export_public(path)
        except CryptoError as exc:
            raise _fail(exc) from None
        text = json.dumps(public.model_dump(mode="json"), indent=2) + "\n"
        if out:
            out.write_text(text, encoding="utf-8")
            typer.echo(str(out))
        else:
            typer.echo(text, nl=False)
