"""A private OpenLDAP server (slapd) on 127.0.0.1 for the directory tests.

It runs from a temporary folder with its own slapd.conf (mdb backend), is loaded with slapadd
before it starts, listens on a free loopback port, and can be stopped and started again on the
same port and data (to test "directory down" and "directory back"). Optional StartTLS with a
self-signed certificate made by openssl.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port

SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "admin-secret"
SERVICE_DN = f"cn=mailmoat,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret"
SCHEMAS = ("core", "cosine", "inetorgperson", "misc")

BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: mailmoat
userPassword: {SERVICE_PW}
"""


def person(uid: str, mail: str, *aliases: str) -> str:
    """LDIF for one mail user: inetOrgPerson with `mail`, aliases in `mailLocalAddress`."""
    lines = [
        f"dn: uid={uid},ou=people,{SUFFIX}",
        "objectClass: inetOrgPerson",
        "objectClass: inetLocalMailRecipient",
        f"uid: {uid}",
        f"cn: {uid}",
        f"sn: {uid}",
        f"mail: {mail}",
        *(f"mailLocalAddress: {a}" for a in aliases),
    ]
    return "\n".join(lines) + "\n"


class Slapd:
    def __init__(self, root: Path, tls: bool = False) -> None:
        self.bin: dict[str, str] = {}
        for binary in ("slapd", "slapadd", "ldapadd"):
            found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
            if found is None:
                pytest.skip(f"{binary} not installed (Debian: slapd, ldap-utils)")
            self.bin[binary] = found
        self.root = root
        self.db = root / "db"
        self.db.mkdir(parents=True)
        self.conf = root / "slapd.conf"
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert: Path | None = None
        if tls:
            self.cert, key = root / "cert.pem", root / "key.pem"
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
                    *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
                    *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                    *("-keyout", str(key), "-out", str(self.cert)),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
        conf = [f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS]
        conf += [
            f"pidfile {root / 'slapd.pid'}",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
        ]
        if self.cert is not None:
            conf += [f"TLSCertificateFile {self.cert}", f"TLSCertificateKeyFile {key}"]
        conf += [
            "database mdb",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f"rootpw {ROOT_PW}",
            f"directory {self.db}",
            "maxsize 10485760",
            "index mail,mailLocalAddress eq",
            # only the service account may read: a failed bind really fails the lookups
            "access to attrs=userPassword by anonymous auth by * none",
            f'access to * by dn.exact="{SERVICE_DN}" read by * none',
        ]
        self.conf.write_text("\n".join(conf) + "\n")

    def load(self, ldif: str) -> None:
        """Add entries offline with slapadd (before the first start only)."""
        subprocess.run(
            [self.bin["slapadd"], "-f", str(self.conf), "-q"],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def add(self, ldif: str) -> None:
        """Add entries to the running server with ldapadd."""
        subprocess.run(
            [self.bin["ldapadd"], "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self) -> Slapd:
        cmd = [self.bin["slapd"], "-f", str(self.conf), "-h", f"{self.url}/", "-d", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"slapd exited with {self.proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not start listening within 15 s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
