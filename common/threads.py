"""Running a call for several items at once (the calls wait on other processes: threads suffice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def concurrently(items: list[Any], call: Callable[[Any], Any]) -> list[tuple[Any, Exception | None]]:
    """``call(item)`` for every item at the same time; ``(result, None)`` or ``(None, exception)`` per
    item, in order."""

    def one(it: Any) -> tuple[Any, Exception | None]:
        try:
            return call(it), None
        except Exception as exc:  # noqa: BLE001 - handed back to the caller
            return None, exc

    if len(items) <= 1:
        return [one(it) for it in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="dcp-dispatch") as pool:
        return list(pool.map(one, items))
