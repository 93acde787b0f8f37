"""The one "wrap an iterator and close it" helper: a response body or an event stream passed on
chunk by chunk, with a look at each chunk and a call when it ends, however it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["observed"]

T = TypeVar("T")


def observed(
    source: Iterable[T],
    on_item: Callable[[T], None] | None = None,
    on_close: Callable[[], None] | None = None,
) -> Iterator[T]:
    """Yield `source`'s items, calling `on_item` with each; when the consumer is done — at the
    end, on an error, or by closing this iterator early — close `source` (if it can be closed)
    and then call `on_close`."""
    try:
        for item in source:
            if on_item is not None:
                on_item(item)
            yield item
    finally:
        try:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        finally:
            if on_close is not None:
                on_close()
