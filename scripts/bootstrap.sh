#!/usr/bin/env bash
# Bootstrap dcp's environment: a CPython 3.10 virtualenv (.venv) with the locked
# Python dependencies (SecretFlow included) and the contracts' npm toolchain.
# Idempotent: a second run with nothing changed only compares stamps.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export UV_PYTHON_DOWNLOADS=never

say() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

find_python310() {
  if [ -n "${DCP_PYTHON:-}" ]; then echo "$DCP_PYTHON"; return; fi
  if command -v python3.10 >/dev/null 2>&1; then
    # pyenv's shim exists even when 3.10 is not the selected version; ask it to run.
    if python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v python3.10; return
    fi
  fi
  local pyroot=""
  if command -v pyenv >/dev/null 2>&1; then pyroot="$(pyenv root)"; fi
  for cand in "$pyroot"/versions/3.10*/bin/python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if [ -x "$cand" ]; then echo "$cand"; return; fi
  done
  return 1
}

PY="$(find_python310)" || die "no CPython 3.10 found. SecretFlow ships wheels for CPython 3.10 only.
  Install one (e.g. 'pyenv install 3.10' or 'apt-get install python3.10 python3.10-venv'),
  or point DCP_PYTHON at a python3.10 binary, then run this again."

# uv: use the one on PATH, else keep a private copy in .tools/
if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
else
  UV="$root/.tools/bin/uv"
  if [ ! -x "$UV" ]; then
    say "installing uv into .tools/"
    "$PY" -m venv "$root/.tools"
    "$root/.tools/bin/pip" install --quiet --disable-pip-version-check uv
  fi
fi

stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# Python environment
py_stamp="$(stamp_of requirements/lock.txt requirements/overrides.txt pyproject.toml)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.dcp-stamp 2>/dev/null)" != "$py_stamp" ]; then
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PY"
    "$UV" venv --quiet -p "$PY" .venv
  fi
  say "installing locked Python dependencies (requirements/lock.txt)"
  VIRTUAL_ENV="$root/.venv" "$UV" pip sync --quiet requirements/lock.txt
  VIRTUAL_ENV="$root/.venv" "$UV" pip install --quiet --no-deps -e .
  echo "$py_stamp" > .venv/.dcp-stamp
fi

# The PySyft low side (researcher sandbox) has its own environment: syft 0.9.5 cannot share
# SecretFlow's pins. CPython 3.12 venv .venv-syft from requirements/syft-lock.txt, stamped like .venv.
# DCP_NO_SYFT=1 skips it (the sandbox's low side is then unavailable and its tests skip).
find_python312() {
  if [ -n "${DCP_SYFT_PYTHON:-}" ]; then echo "$DCP_SYFT_PYTHON"; return; fi
  if command -v python3.12 >/dev/null 2>&1; then
    if python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      command -v python3.12; return
    fi
  fi
  local pyroot=""
  if command -v pyenv >/dev/null 2>&1; then pyroot="$(pyenv root)"; fi
  for cand in "$pyroot"/versions/3.12*/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if [ -x "$cand" ]; then echo "$cand"; return; fi
  done
  return 1
}
if [ "${DCP_NO_SYFT:-0}" != 1 ]; then
  syft_stamp="$(stamp_of requirements/syft-lock.txt)"
  if [ ! -x .venv-syft/bin/python ] || [ "$(cat .venv-syft/.dcp-stamp 2>/dev/null)" != "$syft_stamp" ]; then
    PY312="$(find_python312)" || die "no CPython 3.12 found for the PySyft low side (.venv-syft).
  Install one (e.g. 'pyenv install 3.12'), point DCP_SYFT_PYTHON at a python3.12 binary,
  or set DCP_NO_SYFT=1 to go without the researcher sandbox's low side."
    if [ ! -x .venv-syft/bin/python ]; then
      say "creating .venv-syft with $PY312"
      "$UV" venv --quiet -p "$PY312" .venv-syft
    fi
    say "installing the PySyft low side's locked dependencies (requirements/syft-lock.txt)"
    VIRTUAL_ENV="$root/.venv-syft" "$UV" pip sync --quiet requirements/syft-lock.txt
    echo "$syft_stamp" > .venv-syft/.dcp-stamp
  fi
fi

# npm toolchain for contracts (solc, anvil, cast). `npm install` honours the lockfile;
# `npm ci` rejects it because of the per-platform optional binaries.
if ! command -v npm >/dev/null 2>&1; then
  die "npm not found: install Node.js 18+ (e.g. 'apt-get install nodejs npm')"
fi
js_stamp="$(stamp_of contracts/package.json contracts/package-lock.json)"
if [ ! -d contracts/node_modules ] || [ "$(cat contracts/node_modules/.dcp-stamp 2>/dev/null)" != "$js_stamp" ]; then
  say "installing the contracts' npm toolchain (contracts/package-lock.json)"
  (cd contracts && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$js_stamp" > contracts/node_modules/.dcp-stamp
fi
contracts/node_modules/.bin/anvil --version >/dev/null || die "anvil from @foundry-rs/anvil does not run on this machine"
# Debian packages the tests and services run (requirements/debian.txt: one "package  command" per line;
# a package is installed when its command is missing). As root this installs them; otherwise it says
# which are missing and how to install them, and stops.
missing=()
while read -r pkg cmd _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  if ! command -v "${cmd:-$pkg}" >/dev/null 2>&1 && ! dpkg -s "$pkg" >/dev/null 2>&1; then missing+=("$pkg"); fi
done < requirements/debian.txt
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing Debian packages: ${missing[*]}
  install them as root: apt-get install ${missing[*]}"
  fi
fi
say "ready: .venv ($("$root/.venv/bin/python" --version))$([ -x .venv-syft/bin/python ] && echo ", .venv-syft ($(.venv-syft/bin/python --version))"), contracts/node_modules"
