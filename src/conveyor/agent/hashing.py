"""File hashes that match what 7-Zip prints with `7z h -scrc<NAME>`.

The pipeline's `artifacts.hash` picks one of `HashAlgorithm`; this module computes it the
way 7-Zip does, so a user can check a downloaded artifact with the tool they already
have (`7z h -scrcCRC64 build.7z`):

==========  =====================  =====================================================
algorithm   7-Zip switch           digest as printed (lowercase here)
==========  =====================  =====================================================
crc32       ``-scrcCRC32``         CRC-32/ISO-HDLC as a big-endian number, 8 hex digits
crc64       ``-scrcCRC64``         CRC-64/XZ as a big-endian number, 16 hex digits
sha1        ``-scrcSHA1``          the SHA-1 digest bytes
sha256      ``-scrcSHA256``        the SHA-256 digest bytes
blake2      ``-scrcBLAKE2sp``      the BLAKE2sp digest bytes (8 BLAKE2s leaves + root)
==========  =====================  =====================================================

7-Zip prints a CRC as the number it is (``352441C2`` for ``abc``), not as the bytes it
stores little-endian in an archive; we do the same.
"""

from __future__ import annotations

import hashlib
import operator
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anycrc

from conveyor.pipeline.plan import HashAlgorithm

READ_SIZE = 1 << 20
"""Bytes read from a file at a time."""


class _Digester(Protocol):
    def update(self, data: memoryview) -> None: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> _Digester: ...


class _Crc32:
    def __init__(self, value: int = 0) -> None:
        self._value = value

    def update(self, data: memoryview) -> None:
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        return format(self._value, "08x")

    def copy(self) -> _Crc32:
        return _Crc32(self._value)


# CRC-64/XZ (ECMA-182 polynomial, reflected, all ones in and out) is 7-Zip's CRC64;
# anycrc's `init` continues a running value, which makes it incremental.
_CRC64_XZ = anycrc.Model("CRC64-XZ")


class _Crc64:
    def __init__(self, value: int = 0) -> None:
        self._value = value

    def update(self, data: memoryview) -> None:
        self._value = int(_CRC64_XZ.calc(data, init=self._value))

    def hexdigest(self) -> str:
        return format(self._value, "016x")

    def copy(self) -> _Crc64:
        return _Crc64(self._value)


class _HashlibHash(Protocol):
    def update(self, data: memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> _HashlibHash: ...


class _Hashlib:
    def __init__(self, inner: _HashlibHash) -> None:
        self._inner = inner

    def update(self, data: memoryview) -> None:
        self._inner.update(data)

    def hexdigest(self) -> str:
        return self._inner.hexdigest()

    def copy(self) -> _Hashlib:
        return _Hashlib(self._inner.copy())


_LEAVES = 8
_BLOCK = 64
_STRIPE = _LEAVES * _BLOCK
"""One 64-byte block for each leaf: the unit in which BLAKE2sp deals out its input."""
_SLAB_STRIPES = 2048
"""Stripes dealt out per gather (1 MiB)."""


def _stripe_gatherers(stripes: int) -> list[Callable[[memoryview], tuple[memoryview, ...]]]:
    """For each leaf, a C-level gather of its blocks out of `stripes` whole stripes.

    `itemgetter` with many slices pulls every leaf's blocks out of a buffer without a
    Python loop over the blocks; `bytes.join` then makes them one contiguous update.
    """
    return [
        operator.itemgetter(
            *(
                slice(stripe * _STRIPE + leaf * _BLOCK, stripe * _STRIPE + (leaf + 1) * _BLOCK)
                for stripe in range(stripes)
            )
        )
        for leaf in range(_LEAVES)
    ]


_SLAB_GATHERERS = _stripe_gatherers(_SLAB_STRIPES)


def _blake2sp_node(*, node_offset: int, node_depth: int, last_node: bool) -> hashlib.blake2s:
    return hashlib.blake2s(
        digest_size=32,
        fanout=_LEAVES,
        depth=2,
        leaf_size=0,
        node_offset=node_offset,
        node_depth=node_depth,
        inner_size=32,
        last_node=last_node,
    )


class _Blake2sp:
    """BLAKE2sp: eight BLAKE2s leaves, fed the input in interleaved 64-byte blocks
    (block n goes to leaf n mod 8), and a BLAKE2s root over the eight leaf digests.
    Leaf 7 and the root carry the last-node flag; all nodes have fanout 8, depth 2 and
    inner size 32 (the BLAKE2 specification, section 2.10)."""

    def __init__(self) -> None:
        self._leaves = [
            _blake2sp_node(node_offset=leaf, node_depth=0, last_node=leaf == _LEAVES - 1)
            for leaf in range(_LEAVES)
        ]
        # Bytes short of a whole stripe, kept until more arrive (or the end).
        self._pending = bytearray()

    def copy(self) -> _Blake2sp:
        twin = _Blake2sp.__new__(_Blake2sp)
        twin._leaves = [leaf.copy() for leaf in self._leaves]
        twin._pending = bytearray(self._pending)
        return twin

    def update(self, data: memoryview) -> None:
        if self._pending:
            missing = _STRIPE - len(self._pending)
            self._pending += data[:missing]
            data = data[missing:]
            if len(self._pending) < _STRIPE:
                return
            self._deal(memoryview(bytes(self._pending)))
            self._pending.clear()
        whole = len(data) - len(data) % _STRIPE
        self._deal(data[:whole])
        self._pending += data[whole:]

    def _deal(self, data: memoryview) -> None:
        """Give each leaf its blocks of `data`, whose length is a multiple of a stripe."""
        slab = _SLAB_STRIPES * _STRIPE
        offset = 0
        while offset < len(data):
            piece = data[offset : offset + slab]
            stripes = len(piece) // _STRIPE
            if stripes == 1:
                for leaf, node in enumerate(self._leaves):
                    node.update(piece[leaf * _BLOCK : (leaf + 1) * _BLOCK])
            else:
                gatherers = (
                    _SLAB_GATHERERS if stripes == _SLAB_STRIPES else _stripe_gatherers(stripes)
                )
                for node, gather in zip(self._leaves, gatherers, strict=True):
                    node.update(b"".join(gather(piece)))
            offset += slab

    def hexdigest(self) -> str:
        root = _blake2sp_node(node_offset=0, node_depth=1, last_node=True)
        for leaf, node in enumerate(self._leaves):
            tail = node.copy()
            # The last, partial stripe: each leaf takes its 64-byte share, if any.
            tail.update(self._pending[leaf * _BLOCK : (leaf + 1) * _BLOCK])
            root.update(tail.digest())
        return root.hexdigest()


def _digester(algorithm: HashAlgorithm) -> _Digester:
    match algorithm:
        case HashAlgorithm.CRC32:
            return _Crc32()
        case HashAlgorithm.CRC64:
            return _Crc64()
        case HashAlgorithm.SHA1:
            return _Hashlib(hashlib.sha1(usedforsecurity=False))
        case HashAlgorithm.SHA256:
            return _Hashlib(hashlib.sha256())
        case HashAlgorithm.BLAKE2:
            return _Blake2sp()
        case HashAlgorithm.NONE:
            raise ValueError(
                "HashAlgorithm.NONE has no digest to compute; "
                "use file_digest(), which returns None for it, or pick an algorithm"
            )


class Hasher:
    """An incremental digest of one of the `HashAlgorithm`s (not `none`), equal to what
    `7z h -scrc<NAME>` prints for the same bytes, in lowercase hex.

    `update` takes any bytes-like object; `hexdigest` may be called at any time and does
    not end the hashing (more `update`s may follow).
    """

    def __init__(self, algorithm: HashAlgorithm) -> None:
        self.algorithm = algorithm
        self._digester = _digester(algorithm)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._digester.update(memoryview(data).cast("B"))

    def hexdigest(self) -> str:
        return self._digester.hexdigest()

    def copy(self) -> Hasher:
        twin = Hasher.__new__(Hasher)
        twin.algorithm = self.algorithm
        twin._digester = self._digester.copy()
        return twin


def file_digests(path: Path, algorithms: list[HashAlgorithm]) -> dict[HashAlgorithm, str | None]:
    """Digests of one file for several algorithms, reading it once (`none` gives None)."""
    hashers = [
        Hasher(algorithm) for algorithm in set(algorithms) if algorithm != HashAlgorithm.NONE
    ]
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            for hasher in hashers:
                hasher.update(view[:count])
    digests: dict[HashAlgorithm, str | None] = {HashAlgorithm.NONE: None}
    digests.update({hasher.algorithm: hasher.hexdigest() for hasher in hashers})
    return {algorithm: digests[algorithm] for algorithm in algorithms}


def file_digest(path: Path, algorithm: HashAlgorithm) -> str | None:
    """The digest of a file as `7z h -scrc<NAME>` prints it (lowercase); None for `none`."""
    return file_digests(path, [algorithm])[algorithm]
