"""Fixtures of the batch tests (helpers live in ``batchfakes``)."""

from collections.abc import Iterator

import pytest
from batchfakes import FakeBackend, running_backend


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    with running_backend() as fake:
        yield fake
