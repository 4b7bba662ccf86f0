"""What every test shares: one torch thread while the machine's cores are all busy (`one_thread_if_oversubscribed`:
on a shared 2-core machine two OpenMP threads per process make small models ~10x slower)."""

from __future__ import annotations

import pytest

from criticrm.testing.tiny import one_thread_if_oversubscribed


@pytest.fixture(autouse=True)
def _threads():
    with one_thread_if_oversubscribed():
        yield
