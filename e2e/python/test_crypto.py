"""Cryptography API through the official Dapr Python SDK (gRPC EncryptAlpha1 /
DecryptAlpha1), plus an independent implementation of the `dapr.io/enc/v1`
envelope written from its specification on the `cryptography` package: it
decrypts what daprd encrypts and builds envelopes daprd must decrypt, for both
ciphers and both key wraps (A256KW = RFC 3394, RSA-OAEP-256).

Expects a sidecar with a crypto.dapr.localstorage component "localkeys" over
CRYPTO_KEYS_DIR (components/src/crypto/testdata/keys).
"""

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from dapr.clients import DaprClient
from dapr.clients.grpc._crypto import DecryptOptions, EncryptOptions

COMPONENT = "localkeys"
KEYS = os.environ["CRYPTO_KEYS_DIR"]
SEGMENT = 64 * 1024
TAG = 16
SCHEME = b"dapr.io/enc/v1"


def aes_kek():
    with open(os.path.join(KEYS, "symmetric-key-256"), "rb") as f:
        return base64.b64decode(f.read().strip())


def rsa_private():
    with open(os.path.join(KEYS, "rsa-private-key.pem"), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def aead(cph, key):
    return AESGCM(key) if cph == 1 else ChaCha20Poly1305(key)


def nonce(prefix, i, last):
    return prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def spec_decrypt(ct):
    """Decrypts an envelope per the specification; returns (manifest, plaintext)."""
    l0 = ct.index(b"\n")
    l1 = ct.index(b"\n", l0 + 1)
    l2 = ct.index(b"\n", l1 + 1)
    assert ct[:l0] == SCHEME
    raw_manifest = ct[l0 + 1 : l1]
    m = json.loads(raw_manifest)
    wfk = base64.b64decode(m["wfk"])
    if m["kw"] == 1:
        fk = aes_key_unwrap(aes_kek(), wfk)
    elif m["kw"] == 5:
        fk = rsa_private().decrypt(wfk, OAEP256)
    else:
        raise AssertionError(f"unexpected kw {m['kw']}")
    mac = hmac.HMAC(hkdf(fk, None, b"header"), hashes.SHA256())
    mac.update(SCHEME + b"\n" + raw_manifest + b"\n")
    mac.verify(base64.b64decode(ct[l1 + 1 : l2]))
    np = base64.b64decode(m["np"])
    cipher = aead(m["cph"], hkdf(fk, np, b"payload"))
    body = ct[l2 + 1 :]
    out = bytearray()
    full = SEGMENT + TAG
    count = (len(body) + full - 1) // full
    for i in range(count):
        seg = body[i * full : (i + 1) * full]
        out += cipher.decrypt(nonce(np, i, i == count - 1), seg, None)
    return m, bytes(out)


def spec_encrypt(pt, kw, cph, key_name):
    fk = os.urandom(32)
    np = os.urandom(7)
    if kw == 1:
        wfk = aes_key_wrap(aes_kek(), fk)
    else:
        wfk = rsa_private().public_key().encrypt(fk, OAEP256)
    manifest = {"k": key_name, "kw": kw, "wfk": base64.b64encode(wfk).decode(), "cph": cph,
                "np": base64.b64encode(np).decode()}
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    mac = hmac.HMAC(hkdf(fk, None, b"header"), hashes.SHA256())
    mac.update(SCHEME + b"\n" + raw + b"\n")
    out = bytearray(SCHEME + b"\n" + raw + b"\n" + base64.b64encode(mac.finalize()) + b"\n")
    cipher = aead(cph, hkdf(fk, np, b"payload"))
    segs = [pt[i : i + SEGMENT] for i in range(0, len(pt), SEGMENT)]
    for i, s in enumerate(segs):
        out += cipher.encrypt(nonce(np, i, i == len(segs) - 1), s, None)
    return bytes(out)


DATA = bytes((i * 7) % 256 for i in range(150_000))
CASES = [
    ("symmetric-key-256", "A256KW", 1),
    ("rsa-private-key.pem", "RSA-OAEP-256", 5),
]


@pytest.mark.parametrize("key,alg,kw", CASES)
@pytest.mark.parametrize("cipher,cph", [("aes-gcm", 1), ("chacha20-poly1305", 2)])
def test_sdk_round_trip_and_spec_decoder(key, alg, kw, cipher, cph):
    with DaprClient() as d:
        enc = d.encrypt(
            data=DATA,
            options=EncryptOptions(component_name=COMPONENT, key_name=key, key_wrap_algorithm=alg,
                                   data_encryption_cipher=cipher),
        ).read()
        m, plain = spec_decrypt(enc)
        assert (m["k"], m["kw"], m["cph"]) == (key, kw, cph)
        assert plain == DATA
        back = d.decrypt(data=enc, options=DecryptOptions(component_name=COMPONENT)).read()
        assert back == DATA


@pytest.mark.parametrize("key,alg,kw", CASES)
@pytest.mark.parametrize("cph", [1, 2])
def test_daprd_decrypts_spec_envelopes(key, alg, kw, cph):
    env = spec_encrypt(DATA, kw, cph, key)
    with DaprClient() as d:
        back = d.decrypt(data=env, options=DecryptOptions(component_name=COMPONENT)).read()
    assert back == DATA


def test_string_data_and_key_name_override():
    with DaprClient() as d:
        enc = d.encrypt(
            data="hello dapr",
            options=EncryptOptions(component_name=COMPONENT, key_name="symmetric-key-256",
                                   key_wrap_algorithm="AES", omit_decryption_key_name=True),
        ).read()
        assert b'"k"' not in enc.split(b"\n")[1]
        back = d.decrypt(
            data=enc, options=DecryptOptions(component_name=COMPONENT, key_name="symmetric-key-256")
        ).read()
        assert back == b"hello dapr"


def test_tampered_envelope_fails():
    env = bytearray(spec_encrypt(DATA, 1, 1, "symmetric-key-256"))
    env[-5] ^= 1
    with DaprClient() as d:
        with pytest.raises(Exception):
            d.decrypt(data=bytes(env), options=DecryptOptions(component_name=COMPONENT)).read()
