"""Same-shape batching: images of one height and width go through a model together."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def consecutive_batches(items: Iterable[T], key: Callable[[T], Hashable], size: int) -> Iterator[list[T]]:
    """Runs of consecutive items with equal ``key`` (a shape), at most ``size`` each; order kept, streamed."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    pending: list[T] = []
    pending_key: Hashable = None
    for item in items:
        k = key(item)
        if pending and (len(pending) == size or k != pending_key):
            yield pending
            pending = []
        if not pending:
            pending_key = k
        pending.append(item)
    if pending:
        yield pending


def grouped_batches(items: Sequence[T], key: Callable[[T], Hashable], size: int) -> list[list[int]]:
    """Indices of ``items`` grouped by ``key`` over the whole sequence, at most ``size`` per batch.

    Groups come in the order their first member appears; indices inside a group keep
    their order. Unlike :func:`consecutive_batches` this needs the whole sequence but
    makes the fewest batches.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    groups: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return [idx[k : k + size] for idx in groups.values() for k in range(0, len(idx), size)]
