"""A label's history is stamped in the order its moves happened: each move's ``moved_at`` is
taken once the label's lock is held, so moves that waited for one another are never recorded
earlier than the move they waited for."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from sqlalchemy.ext.asyncio import AsyncEngine

from app.prompts import PromptStore
from tests.prompts.test_store import make, version


async def test_concurrent_moves_are_stamped_in_history_order(engine: AsyncEngine) -> None:
    store = PromptStore(engine)
    await make(store)
    for n in range(2, 6):
        await store.add_version("summarise", version(f"v{n} {{{{ text }}}}"))
    await store.set_label("summarise", "prod", 1)
    await store.set_label("summarise", "prod", 2)
    await asyncio.gather(
        *(store.rollback("summarise", "prod") if i % 7 == 6 else
          store.set_label("summarise", "prod", 1 + i % 5) for i in range(30)))
    moments = [move.moved_at or 0.0 for move in (await store.get_template("summarise")).history
               if move.label == "prod"]
    assert len(moments) >= 10
    assert all(a <= b for a, b in pairwise(moments)), \
        [(a, b) for a, b in pairwise(moments) if a > b]
