"""A throwaway test CA, server certificates signed by it, and a private NSS database that
trusts it (for Chromium's `turns:` tests in test_chromium.py).

Everything is made with the openssl CLI and NSS's certutil (Debian package libnss3-tools)
in a directory the caller owns (a pytest tmp_path): nothing system-wide is touched. The
keys are P-256, the certificates are valid for two days.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

CERTUTIL = "/usr/bin/certutil"


def _run(cmd: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           + proc.stdout.decode(errors="replace"))


def _ec_key(path: Path, cwd: Path) -> None:
    _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", str(path)], cwd)


@dataclass
class CertAuthority:
    name: str
    cert: Path      # PEM
    key: Path       # PEM


@dataclass
class ServerCert:
    chain: Path     # PEM: leaf, then the issuing CA
    key: Path       # PEM
    sans: str       # the subjectAltName it was made with


def make_ca(directory: Path, name: str) -> CertAuthority:
    """A self-signed root CA `CN=<name>` (basicConstraints critical CA:TRUE, pathlen 0)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    _ec_key(key, directory)
    _run(["openssl", "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", "2",
          "-subj", f"/O=turnrelay tests/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash",
          "-out", str(cert)], directory)
    return CertAuthority(name=name, cert=cert, key=key)


def make_server_cert(directory: Path, ca: CertAuthority, name: str, sans: str,
                     cn: str = "") -> ServerCert:
    """A TLS server (leaf) certificate signed by `ca` with subjectAltName `sans`
    (openssl syntax, e.g. "DNS:localhost,IP:127.0.0.1,IP:::1"), files named after `name`;
    CN is `cn`, or `name` if empty (Chromium ignores CN: only the SAN is checked)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    leaf, chain = directory / f"{name}.pem", directory / f"{name}-chain.pem"
    ext = directory / f"{name}.ext"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\n"
                   f"subjectAltName = {sans}\n")
    _ec_key(key, directory)
    _run(["openssl", "req", "-new", "-key", str(key), "-subj",
          f"/O=turnrelay tests/CN={cn or name}", "-out", str(csr)], directory)
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
          "-CAcreateserial", "-sha256", "-days", "2", "-extfile", str(ext), "-out", str(leaf)],
         directory)
    chain.write_text(leaf.read_text() + ca.cert.read_text())
    return ServerCert(chain=chain, key=key, sans=sans)


def make_nss_home(home: Path, ca: CertAuthority, nickname: str = "turnrelay-test-ca") -> Path:
    """A HOME directory whose NSS database ($HOME/.pki/nssdb, the one Chromium on Linux
    reads) trusts `ca` as an issuer of TLS server certificates (trust flags "C,,": SSL
    only, not e-mail or code signing). Returns the database directory."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    _run([CERTUTIL, "-d", f"sql:{db}", "-N", "--empty-password"], home)
    _run([CERTUTIL, "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", nickname, "-i", str(ca.cert)],
         home)
    return db


def nss_list(db: Path) -> str:
    """`certutil -L` of the database (for failure messages)."""
    proc = subprocess.run([CERTUTIL, "-d", f"sql:{db}", "-L"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
    return proc.stdout.decode(errors="replace")
