"""Micro-batching: a batch closes when it is full or its oldest item has waited long enough."""

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        self._items.append((now, item))

    def ready(self, now: float) -> bool:
        return len(self._items) >= self.max_batch or (
            bool(self._items) and now - self._items[0][0] >= self.max_wait_s)

    def wait_s(self, now: float) -> float | None:
        """Seconds until the current batch is due (0 when it is), None when empty."""
        if not self._items:
            return None
        if len(self._items) >= self.max_batch:
            return 0.0
        return max(0.0, self._items[0][0] + self.max_wait_s - now)

    def take(self) -> list[T]:
        count = min(self.max_batch, len(self._items))
        return [self._items.popleft()[1] for _ in range(count)]

    def drop(self, predicate: Callable[[T], bool]) -> int:
        """Forget the items for which predicate is true (partitions taken away by a rebalance)."""
        kept = deque((t, item) for t, item in self._items if not predicate(item))
        dropped = len(self._items) - len(kept)
        self._items = kept
        return dropped
