# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""The trusted keys of the modules that verify a signature (release_verify, channel_verify):
the options module_utils/release_signature.py's TRUST_ARGUMENT_SPEC declares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  public_key:
    description:
      - A trusted Ed25519 public key, as the content of a C(release-signing.pub) written by
        C(linkedge-image keygen) (PEM C(PUBLIC KEY)) or base64 of the 32 raw bytes. Several PEM
        blocks in one text are several trusted keys.
      - The one-key shorthand of O(public_keys); the keys of both are trusted. At least one
        key must be given by O(public_key), O(public_key_path) or O(public_keys).
    type: str
  public_key_path:
    description: Path on the target of a file holding trusted public keys (as O(public_key)).
    type: path
  public_keys:
    description:
      - Trusted Ed25519 public keys (each as O(public_key)), for example the current and the
        next signing key during a rotation.
    type: list
    elements: str
    default: []
  revoked_key_ids:
    description:
      - Key ids (sha256 hex of the raw public key, as C(keygen) prints it; a C(sha256:) prefix
        is accepted) whose signatures are refused, even when the key is still trusted.
    type: list
    elements: str
    default: []
requirements:
  - Python cryptography >= 2.6 on the target (C(python3-cryptography) on Debian and Ubuntu)
"""
