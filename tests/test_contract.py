"""Every registered component meets the lifecycle contract (pipeline.testing.check_factory)."""

from __future__ import annotations

import pytest

from pipeline.pluginmanager import default_registry
from pipeline.testing import check_factory

ENTRIES = default_registry().entries()


@pytest.mark.parametrize(
    "entry", ENTRIES, ids=[f"{e.factory.kind}-{e.factory.type}" for e in ENTRIES]
)
async def test_factory_contract(entry: object) -> None:
    await check_factory(entry.factory)  # type: ignore[attr-defined]
