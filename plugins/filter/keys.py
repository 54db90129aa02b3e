# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import hashlib

from ansible.errors import AnsibleFilterError

try:
    from cryptography.hazmat.primitives import serialization

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - cryptography is a requirement of the collection
    HAS_CRYPTOGRAPHY = False


def ec2_fingerprint(public_key: str) -> str:
    """The fingerprint EC2 shows for an imported RSA key: MD5 of the DER SubjectPublicKeyInfo."""
    if not HAS_CRYPTOGRAPHY:
        raise AnsibleFilterError("ec2_fingerprint needs the Python package cryptography")
    try:
        key = serialization.load_ssh_public_key(public_key.encode())
    except (ValueError, AttributeError) as exc:
        raise AnsibleFilterError(f"ec2_fingerprint: not an OpenSSH public key: {exc}") from exc
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class FilterModule:
    def filters(self):
        return {"ec2_fingerprint": ec2_fingerprint}
