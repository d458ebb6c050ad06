"""Secret masking of step output, before a log line leaves the agent.

What is masked, for every secret value:

- the value itself, wherever it occurs;
- each line of a multi-line value on its own (a private key printed by `cat` reaches
  the log line by line, and a chunk may hold only some of its lines), leading and
  trailing whitespace of a line left out;
- the base64 forms of the value: standard and URL-safe alphabet, with and without `=`
  padding (tools love to print credentials base64-encoded: basic auth, k8s secrets).

What is not: values (and lines of values) shorter than `MIN_SECRET_LENGTH` characters,
not counting surrounding whitespace. A secret `on` or `1` would turn every log into
asterisks and hide nothing an attacker could not guess; such values are dropped
silently, and `Masker.unmaskable` names them so the caller can warn the user.

Every match becomes `MASK`. Where secrets overlap (`abcdef` and `defghi` in
`abcdefghi`), the whole stretch they cover becomes one `MASK`, so no part of either
leaks; where several match at one place, the longest wins.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

MASK = b"********"
MIN_SECRET_LENGTH = 4


def _forms(value: str) -> set[bytes]:
    """Every byte string that gives `value` away, each long enough to be masked."""
    forms: set[bytes] = set()
    if len(value.strip()) < MIN_SECRET_LENGTH:
        return forms
    raw = value.encode()
    forms.add(raw)
    for line in value.splitlines():
        if len(line.strip()) >= MIN_SECRET_LENGTH:
            forms.add(line.strip().encode())
    for encoded in (base64.standard_b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms.add(encoded)
        forms.add(encoded.rstrip(b"="))
    return forms


class Masker:
    """Masks the values of a set of secrets in chunks of complete output lines.

    Built once per step from secret name -> value. `mask` is called for every chunk the
    step prints, so it is one compiled regular expression over all forms of all
    secrets, and returns the chunk itself when there is nothing to mask.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        forms: set[bytes] = set()
        self.unmaskable: list[str] = []
        """Names of the secrets whose values are too short to mask."""
        for name, value in secrets.items():
            found = _forms(value)
            if not found and value:
                self.unmaskable.append(name)
            forms |= found
        # Longest first: Python's `re` takes the first alternative that matches at a
        # position, so this makes the longest form win.
        ordered = sorted(forms, key=lambda form: (-len(form), form))
        self._pattern = (
            re.compile(b"|".join(re.escape(form) for form in ordered)) if ordered else None
        )

    def mask(self, data: bytes) -> bytes:
        """`data` (complete lines) with every form of every secret replaced by `MASK`."""
        if self._pattern is None:
            return data
        search = self._pattern.search
        found = search(data)
        if found is None:
            return data
        match_at = self._pattern.match
        pieces: list[bytes] = []
        kept_from = 0
        while found is not None:
            start, end = found.span()
            # A secret may begin inside this match and reach past it; stretch the mask
            # over it so its tail does not leak. Matches are rare and short, so looking
            # at each position inside one costs nothing that shows.
            probe = start + 1
            while probe < end:
                overlapping = match_at(data, probe)
                if overlapping is not None and overlapping.end() > end:
                    end = overlapping.end()
                probe += 1
            pieces.append(data[kept_from:start])
            pieces.append(MASK)
            kept_from = end
            found = search(data, end)
        pieces.append(data[kept_from:])
        return b"".join(pieces)
