"""Trust on first use, as SSH and the Rust client: a known-hosts file holds lines
``host:port SHA256:<base64>``. An unknown host is refused unless accepted (and then recorded); a
changed fingerprint is a hard failure with no bypass. Same file format as the Rust client, so the
two share ``~/.velocity/known_hosts``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import TrustError

PathLike = Union[str, "os.PathLike[str]"]


def default_known_hosts() -> Path:
    return Path(os.environ.get("HOME", ".")) / ".velocity" / "known_hosts"


def host_label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def lookup(path: Path, label: str) -> Optional[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.lstrip().startswith("#") or " " not in line:
            continue
        h, fp = line.split(" ", 1)
        if h == label:
            return fp.strip()
    return None


def record(path: Path, label: str, fingerprint: str) -> None:
    if path.parent.name == ".velocity":
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{label} {fingerprint}\n")


def _changed(label: str, known: str, now: str, path: Path) -> str:
    return (
        "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: VELOCITY SERVER IDENTIFICATION HAS CHANGED!  @\n"
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
        "It is also possible that the server's identity key was replaced.\n"
        f"The fingerprint for {label} recorded in {path} is\n    {known}\n"
        f"and the server now presents\n    {now}\n"
        "Check the new fingerprint with the server's operator (`velocityd fingerprint`), then\n"
        f"remove the old line from {path}. The connection was refused."
    )


def check(
    label: str,
    fingerprint: str,
    known_hosts: Optional[PathLike] = None,
    accept_new_host: Union[bool, Callable[[str, str], bool]] = False,
    pinned: Optional[str] = None,
) -> None:
    """Raise ``TrustError`` unless the server presenting ``fingerprint`` is trusted.

    ``accept_new_host`` may be a callable ``(host_label, fingerprint) -> bool`` that asks a person.
    ``pinned`` accepts exactly that fingerprint, whatever the known-hosts file says.
    """
    if pinned is not None:
        if pinned != fingerprint:
            raise TrustError(f"server {label} presents {fingerprint}, not the pinned fingerprint {pinned}: refused")
        return
    path = Path(known_hosts) if known_hosts is not None else default_known_hosts()
    known = lookup(path, label)
    if known == fingerprint:
        return
    if known is not None:
        raise TrustError(_changed(label, known, fingerprint, path))
    accept = accept_new_host(label, fingerprint) if callable(accept_new_host) else bool(accept_new_host)
    if not accept:
        raise TrustError(
            f"unknown server {label} with fingerprint {fingerprint}: check it with the server's operator "
            f"(`velocityd fingerprint`), then connect with accept_new_host=True or fingerprint='{fingerprint}'"
        )
    record(path, label, fingerprint)


def _der_element(der: bytes, pos: int):
    """(tag, start of content, end of element) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise TrustError("server certificate is truncated")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise TrustError("server certificate has an invalid length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise TrustError("server certificate is truncated")
    return tag, pos, pos + length


def spki_sha256(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (the profile's fingerprint).

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … }
    """
    _, cert_body, _ = _der_element(cert_der, 0)
    _, pos, _ = _der_element(cert_der, cert_body)  # tbsCertificate content
    tag, _, end = _der_element(cert_der, pos)
    if tag == 0xA0:  # explicit version
        pos = end
    for _ in range(5):  # serial, signature algorithm, issuer, validity, subject
        _, _, pos = _der_element(cert_der, pos)
    tag, _, end = _der_element(cert_der, pos)
    if tag != 0x30:
        raise TrustError("server certificate has no SubjectPublicKeyInfo")
    return hashlib.sha256(cert_der[pos:end]).digest()
