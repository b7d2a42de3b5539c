"""Request ids made by the gateway: 24 hex digits, distinct, and distinct in a forked worker
(Python's generator is reseeded in a forked child; a copied state would repeat the parent's)."""

from __future__ import annotations

import os
import re

from asgi_router.web.exchange import _new_request_id


def test_ids_are_24_hex_digits_and_distinct() -> None:
    ids = [_new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, ",".join(_new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    ours = {_new_request_id() for _ in range(5)}
    theirs = set(os.read(read, 4096).decode().split(","))
    os.waitpid(pid, 0)
    os.close(read)
    assert len(theirs) == 5
    assert not ours & theirs
