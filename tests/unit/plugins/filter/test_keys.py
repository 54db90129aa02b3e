from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.tenantforge.platform.plugins.filter.keys import ec2_fingerprint


def test_fingerprint_is_md5_of_the_der_public_key_as_ec2_shows_it() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = hashlib.md5(der, usedforsecurity=False).hexdigest()

    fingerprint = ec2_fingerprint(openssh + " comment")

    assert fingerprint.replace(":", "") == expected
    assert len(fingerprint.split(":")) == 16


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(AnsibleFilterError, match="not an OpenSSH public key"):
        ec2_fingerprint("ssh-rsa not-base64")
