"""Test order and lanes for `make test` (``pytest -n 2``, pytest-xdist).

Two lanes on two cores: every integration test runs in one lane, one at a time (vLLM replicas are
pinned to cores; two stacks starting or serving at once would measure each other), while the unit
tests run beside it, a module at a time (a module's fixed port block is never used twice at once).
The lanes are xdist work units chosen by test path (``Lanes``), not by marks: pytest 9 no longer
lets xdist's ``loadgroup`` rename tests into groups.

Inside the integration lane the order is by stack, so each stack runs alone and is stopped after its
last user: first the tests that start no vLLM, then the session stack's users, then the one test that
takes the session stack down and up again (``last_session_stack_user``), then the modules that start
stacks of their own. Without xdist the same order holds and everything runs in one process.
"""

from __future__ import annotations

import pytest

_NO_VLLM, _SESSION_STACK, _SESSION_STACK_LAST, _OWN_STACKS = range(4)
_INTEGRATION = "tests/integration/"


def _stage(item: pytest.Item, module_fixtures: set[str]) -> int:
    if item.get_closest_marker("last_session_stack_user"):
        return _SESSION_STACK_LAST
    if "stack" in module_fixtures:
        return _SESSION_STACK
    if "engine_python" in module_fixtures:
        return _OWN_STACKS
    return _NO_VLLM


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    by_module: dict[str, set[str]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], set()).update(getattr(item, "fixturenames", ()))
    integration = [i for i in items if i.nodeid.startswith(_INTEGRATION)]
    others = [i for i in items if not i.nodeid.startswith(_INTEGRATION)]
    integration.sort(key=lambda i: _stage(i, by_module[i.nodeid.split("::")[0]]))  # stable: file order kept
    items[:] = integration + others


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it runs
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        """Work units: the whole integration lane (the largest, so it starts first), one per unit module."""

        def _split_scope(self, nodeid: str) -> str:
            return "integration" if nodeid.startswith(_INTEGRATION) else nodeid.split("::")[0]

    return Lanes(config, log)
