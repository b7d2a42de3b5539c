"""A response's head for h11, validated once instead of three times.

h11 (0.14-0.16) checks every header of a response against its name and value patterns when
the ``Response`` event is made, and again, all of them, in each ``set_comma_header`` call it
makes to fix up the framing: two more for a streamed (chunked) answer. With the gateway's ten
or so headers that cost 37 µs of a stream's head (16 µs for one header) and 22 µs of a plain
answer's, warm; at one connection, with the core's caches cold, a stream's head took 122 µs,
all before its first token went out.

h11 reads only three headers of a response: ``content-length`` and ``transfer-encoding`` for
the framing, ``connection`` for keep-alive. So those go through h11 as before, which writes
the status line and the framing; the others are checked here, once, with h11's own rules (a
token name; a value without NUL or line breaks, spaces and tabs inside only), and written
into its head before the blank line that ends it. The bytes on the wire differ from h11's in
the order of the lines alone. A header that fails the check sends the whole head back through
h11, which raises as it always did.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import h11

# field-name (a token) and field-value exactly as h11._abnf spells them (test_heads checks)
_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_FOR_H11 = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NAMES: dict[bytes, bool] = {}  # names checked so far: True if h11 takes them (framing)
_MAX_NAMES = 1024


def _kind(name: bytes) -> bool | None:
    """True for a header h11 must see, False for one written here, None for an invalid name."""
    known = _NAMES.get(name)
    if known is not None:
        return known
    if not _NAME.fullmatch(name):
        return None
    if len(_NAMES) >= _MAX_NAMES:
        _NAMES.clear()
    known = _NAMES[name] = name.lower() in _FOR_H11
    return known


def serialise_head(connection: h11.Connection, status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``connection.send(h11.Response(status_code=status, headers=headers))``, the same head
    (but for the order of its lines) at a third of the cost. Raises as h11 does."""
    framing: list[tuple[bytes, bytes]] = []
    lines: list[bytes] = []
    for name, value in headers:
        kind = _kind(name)
        if kind is None or not _VALUE.fullmatch(value):
            break  # h11 says what is wrong with it
        if kind:
            framing.append((name, value))
        else:
            lines.append(b"%s: %s\r\n" % (name, value))
    else:
        head = connection.send(h11.Response(status_code=status, headers=framing))
        assert head is not None and head.endswith(b"\r\n\r\n")
        return head[:-2] + b"".join(lines) + b"\r\n"
    head = connection.send(h11.Response(status_code=status, headers=list(headers)))
    assert head is not None
    return head
