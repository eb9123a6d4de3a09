"""The test vectors of docs/FORMAT.md: parse them out of the document, and rebuild them.

A vector is a fenced block tagged ``vector`` holding ``key: value`` lines (a line starting with
spaces continues the previous value). Inputs fix every random value the writer draws, in the
order it draws them; outputs are what a conforming writer must produce. ``python -m
tests.format.vectors`` prints freshly computed blocks (only for a deliberate format change).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from tapearc.format import tae
from tapearc.format.keys import Identity, SigningKey
from tapearc.format.signing import Binding
from tapearc.format.writer import ArchiveWriter, StreamEncryptor

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
_BLOCK_RE = re.compile(r"^```vector\n(.*?)^```", re.S | re.M)

Vector = dict[str, str]


def parse_vectors(text: str) -> list[Vector]:
    """Every ``vector`` block of a markdown text, as key -> value (continuations joined)."""
    vectors = []
    for body in _BLOCK_RE.findall(text):
        vec: Vector = {}
        key = None
        for line in body.splitlines():
            if not line.strip():
                continue
            if line.startswith(" ") and key is not None:
                vec[key] += line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip()
            vec[key] = value.strip()
        vectors.append(vec)
    return vectors


def entropy_of(vec: Vector) -> Iterator[bytes]:
    """The random values in the order the writer draws them."""
    yield bytes.fromhex(vec["file_key"])
    yield bytes.fromhex(vec["archive_uuid"])
    yield bytes.fromhex(vec["payload_salt"])
    n = 1
    while f"ephemeral_{n}" in vec:
        yield bytes.fromhex(vec[f"ephemeral_{n}"])
        n += 1


def identities_of(vec: Vector) -> list[Identity]:
    """The recipients' private keys, in header order."""
    names = [k.removesuffix("_private") for k in vec if k.endswith("_private")]
    return [Identity.from_private_bytes(n, bytes.fromhex(vec[f"{n}_private"])) for n in names]


def signer_of(vec: Vector) -> SigningKey | None:
    """The signing key of a signed vector (``signing_seed``), else None."""
    seed = vec.get("signing_seed")
    return SigningKey.from_private_bytes("sign", bytes.fromhex(seed)) if seed else None


def plaintext_of(vec: Vector) -> bytes:
    """The plaintext of a raw stream vector: ``pattern N`` = bytes i mod 251 for i < N."""
    kind, _, n = vec["plaintext"].partition(" ")
    assert kind == "pattern"
    return bytes(i % 251 for i in range(int(n)))


def build(vec: Vector) -> list[bytes]:
    """Write the vector's stream with its fixed inputs; returns the medium blocks."""
    draws = entropy_of(vec)
    blocks: list[bytes] = []
    recipients = [i.recipient for i in identities_of(vec)]
    common = {
        "block_size": int(vec["block_size"]),
        "created": int(vec["created"]),
        "entropy": lambda n: next(draws),
        "signer": signer_of(vec),
        "binding": Binding(vec.get("barcode", ""), int(vec.get("medium_file", "0"))),
    }
    if vec["content"] == "1":
        writer = ArchiveWriter(lambda b: blocks.append(bytes(b)), recipients, **common)  # type: ignore[arg-type]
        writer.add_bytes(vec["member"], bytes.fromhex(vec["member_body"]), int(vec["member_mtime"]))
        writer.close()
    else:
        enc = StreamEncryptor(
            lambda b: blocks.append(bytes(b)),
            recipients,
            content=int(vec["content"]),
            **common,  # type: ignore[arg-type]
        )
        enc.write(plaintext_of(vec))
        enc.close()
    return blocks


def outputs(vec: Vector, blocks: list[bytes]) -> Vector:
    """The output fields of a vector computed from its blocks."""
    header = tae.parse_header(blocks[0])
    file_key = bytes.fromhex(vec["file_key"])
    out: Vector = {}
    for ident in identities_of(vec):
        out[f"{ident.name}_key_id"] = ident.key_id.hex()
    signer = signer_of(vec)
    if signer is not None:
        out["signer_public"] = signer.signer.public.hex()
    out["header"] = header.raw.hex()
    out["header_mac_key"] = tae.hkdf(file_key, b"", b"tapearc/v1/header").hex()
    out["payload_key"] = tae.payload_key(file_key, header).hex()
    out["blocks"] = str(len(blocks))
    for i, block in enumerate(blocks):
        out[f"block_{i}_sha256"] = hashlib.sha256(block).hexdigest()
    last = blocks[-1]
    if len(last) <= 4096:
        out[f"block_{len(blocks) - 1}"] = base64.b64encode(last).decode()
    return out


def render(vec: Vector) -> str:
    """A vector block for FORMAT.md (inputs as given, outputs recomputed), wrapped at 76."""
    lines = ["```vector"]
    merged = {**{k: v for k, v in vec.items() if not _is_output(k)}, **outputs(vec, build(vec))}
    for key, value in merged.items():
        head = f"{key}: "
        if len(head) + len(value) <= 92:
            lines.append(head + value)
            continue
        lines.append(head.rstrip())
        lines += ["    " + value[i : i + 72] for i in range(0, len(value), 72)]
    lines.append("```")
    return "\n".join(lines)


def _is_output(key: str) -> bool:
    return bool(re.match(r"header|payload_key|blocks$|block_\d|signer_public", key)) or \
        key.endswith("_key_id")


if __name__ == "__main__":
    for vector in parse_vectors(FORMAT_MD.read_text()):
        print(render(vector) + "\n")
