"""Certificates made by the test: a CA with a server and a client certificate, and
a second CA whose client certificate the first must refuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    ca: Path  # signs the server's and the trusted client's certificates
    server_cert: Path  # for localhost and 127.0.0.1
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("backend.imagegen.test")
    stranger = other_ca.issue_cert("backend.imagegen.test")
    paths = {name: directory / f"{name}.pem" for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for prefix, cert in (("server", server), ("client", client), ("stranger", stranger)):
        cert.private_key_pem.write_to_path(str(paths[f"{prefix}_key"]))
        for i, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(str(paths[f"{prefix}_cert"]), append=i > 0)
    return Pki(**paths)
