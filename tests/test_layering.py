"""Architecture rules from DESIGN.md, checked on the source so a shortcut fails the suite.

* Dependencies run one way: xcaliber.lib <- clinics <- billing <- inference <- referrals.
* API views never query models themselves: fetching by id goes through an
  ``access_*`` function and lists through selectors, both clinic-scoped.
* Only the ``access`` modules and the kernel may fetch tenant rows by a client's id.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("clinics", "billing", "inference", "referrals")
FORBIDDEN_IMPORTS = {
    "xcaliber/lib": ("clinics", "billing", "inference", "referrals"),
    "clinics": ("billing", "inference", "referrals"),
    "billing": ("inference", "referrals"),
    "inference": ("referrals",),
}


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_IMPORTS))
def test_dependencies_run_one_way(folder: str) -> None:
    offenders = []
    for path in _python_files(folder):
        for module in _imported_modules(path):
            if module.split(".")[0] in FORBIDDEN_IMPORTS[folder]:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)


# The tenant kernel resolves the caller's own memberships from their credentials: that is its job.
VIEW_EXEMPT = {"serializers.py", "base.py"}


def _api_view_files() -> list[Path]:
    return [p for app in APPS for p in _python_files(app) if "api" in p.parts and p.name not in VIEW_EXEMPT]


def test_api_views_do_not_query_models_directly() -> None:
    """`.objects` and `get_object_or_404` in a view would skip the clinic scope of access functions."""
    offenders = []
    for path in _api_view_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {"objects", "_default_manager"}:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.Name) and node.id == "get_object_or_404":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses get_object_or_404")
    assert not offenders, "views must fetch through access_* and selectors:\n" + "\n".join(offenders)


def test_every_access_function_is_keyword_only_and_takes_an_actor() -> None:
    found = 0
    for app in APPS:
        for path in _python_files(app):
            if path.name != "access.py":
                continue
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("access_"):
                    found += 1
                    assert not node.args.args, f"{node.name} must take keyword-only arguments"
                    assert node.args.kwonlyargs[0].arg == "actor", (
                        f"{node.name}'s first argument must be actor"
                    )
    assert found >= 3


def test_the_model_package_imports_no_django() -> None:
    folder = ROOT / "inference" / "model"
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (sorted(folder.rglob("*.py")) if folder.exists() else [])
        for module in _imported_modules(path)
        if module.split(".")[0] in {"django", "rest_framework", "channels", "clinics", "billing", "inference"}
        and not module.startswith("inference.model")
    ]
    assert not offenders, "\n".join(offenders)
