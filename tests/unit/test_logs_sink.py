"""logs.LineSink: the lines of one event-loop iteration go out in one write, in order."""

from __future__ import annotations

import asyncio
import io
import threading

from asgi_router.logs import LineSink


class Recorder(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


def test_lines_of_one_loop_iteration_are_written_together_right_after_it() -> None:
    out = Recorder()
    sink = LineSink(out)

    async def main() -> list[bytes]:
        sink.info(b'{"n":1}')
        sink.info(b'{"n":2}')
        sink.debug(b'{"n":3}')
        assert out.writes == []  # not yet: the iteration is still running
        await asyncio.sleep(0)  # the next iteration
        seen = list(out.writes)
        sink.info(b'{"n":4}')
        await asyncio.sleep(0)
        return seen

    first = asyncio.run(main())
    assert first == [b'{"n":1}\n{"n":2}\n{"n":3}\n']
    assert out.writes == [first[0], b'{"n":4}\n']


def test_a_warning_or_error_goes_out_at_once_after_what_came_before() -> None:
    out = Recorder()
    sink = LineSink(out)

    async def main() -> None:
        sink.info(b"a")
        sink.error(b"b")
        assert out.writes == [b"a\nb\n"]
        sink.warning(b"c")
        assert out.writes == [b"a\nb\n", b"c\n"]

    asyncio.run(main())


def test_outside_a_loop_each_line_is_written_straight_away() -> None:
    out = Recorder()
    sink = LineSink(out)
    sink.info(b"cli")
    t = threading.Thread(target=sink.info, args=(b"thread",))
    t.start()
    t.join()
    assert out.writes == [b"cli\n", b"thread\n"]


def test_flush_writes_what_is_left_and_a_broken_file_is_not_an_error() -> None:
    out = Recorder()
    sink = LineSink(out)

    async def main() -> None:
        sink.info(b"left")  # the loop ends before its flush would run
        sink.flush()

    asyncio.run(main())
    assert out.writes == [b"left\n"]
    out.close()
    closed = LineSink(out)
    closed.error(b"nowhere")  # ValueError from a closed file: swallowed, nothing raised
