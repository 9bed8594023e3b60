"""Attach the logs of the server processes a failed end-to-end test used to its report."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.e2e.support import ServerProcess


def _servers(value: Any) -> list[ServerProcess]:
    if isinstance(value, ServerProcess):
        return [value]
    servers = getattr(value, "servers", None)
    if isinstance(servers, list | tuple):
        return [server for server in servers if isinstance(server, ServerProcess)]
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    seen: set[int] = set()
    for value in getattr(item, "funcargs", {}).values():
        for server in _servers(value):
            if id(server) in seen:
                continue
            seen.add(id(server))
            report.sections.append((f"{server.name} log ({server.log_path})", server.log_text()))
