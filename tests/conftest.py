"""Test order and lanes for `make test` (``pytest -n 2``, pytest-xdist).

Two lanes on two cores: every test that runs a serving stack is in one lane, one at a time (vLLM
replicas are pinned to cores; two stacks starting or serving at once would measure each other),
while the rest runs beside it, a module at a time (a module's fixed port block is never used twice
at once): the unit tests, and the integration tests in ``tests/integration/no_stack/`` (real Envoy,
picker, batch service and PEFT against stand-in backends; `up` refusing bad input). The lanes are
xdist work units chosen by test path (``Lanes``), not by marks: pytest 9 no longer lets xdist's
``loadgroup`` rename tests into groups.

Inside the stack lane the order is by stack, so each stack runs alone and is stopped after its last
user: first the tests that start no stack, then the session stack's users, then the one test that
takes the session stack down and up again (``last_session_stack_user``), then the modules that start
stacks of their own. Without xdist the same order holds and everything runs in one process.
"""

from __future__ import annotations

import pytest

_NO_STACK, _SESSION_STACK, _SESSION_STACK_LAST, _OWN_STACKS = range(4)
_INTEGRATION = "tests/integration/"
_NO_STACK_DIR = "tests/integration/no_stack/"


def _in_stack_lane(nodeid: str) -> bool:
    return nodeid.startswith(_INTEGRATION) and not nodeid.startswith(_NO_STACK_DIR)


def _stage(item: pytest.Item, module_fixtures: set[str]) -> int:
    if item.get_closest_marker("last_session_stack_user"):
        return _SESSION_STACK_LAST
    if "stack" in module_fixtures:
        return _SESSION_STACK
    if "engine_python" in module_fixtures:
        return _OWN_STACKS
    return _NO_STACK


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    by_module: dict[str, set[str]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], set()).update(getattr(item, "fixturenames", ()))
    stacks = [i for i in items if _in_stack_lane(i.nodeid)]
    others = [i for i in items if not _in_stack_lane(i.nodeid)]
    stacks.sort(key=lambda i: _stage(i, by_module[i.nodeid.split("::")[0]]))  # stable: file order kept
    items[:] = stacks + others


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it runs
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        """Work units: the whole stack lane (the largest, so it starts first), one per other module."""

        def _split_scope(self, nodeid: str) -> str:
            return "stacks" if _in_stack_lane(nodeid) else nodeid.split("::")[0]

    return Lanes(config, log)
