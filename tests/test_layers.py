"""The layers hold: SQL only in storage, modules small, and the import contracts would catch a
dependency pointing the wrong way."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cpms", "actors", "api", "storage", "sim")
SQL_CALLS = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "copy_records_to_table"}
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ")


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_no_sql_outside_storage() -> None:
    found = []
    for path in modules("cpms", "actors", "api", "sim"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.lstrip()
                if text.startswith(SQL_WORDS):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {text[:30]!r}")
    assert found == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules(*PACKAGES)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


# Each import below points the wrong way; the contracts in pyproject.toml must refuse it.
WRONG_WAYS = [
    ("storage/clients.py", "import actors.runtime"),  # storage above the runtime
    ("storage/sessions.py", "import actors.session.actor"),  # storage above the domain
    ("actors/runtime/_registry.py", "import storage.database"),  # runtime above storage
    ("cpms/kernel/money.py", "import cpms.ocpp.frames"),  # kernel above the protocol
    ("cpms/ocpp/frames.py", "import actors.charge_point.actor"),  # protocol above the domain
    ("actors/session/actor.py", "import api.charging"),  # domain above the API
    ("api/charging.py", "import cpms.server.app"),  # API above the server
    ("cpms/server/app.py", "import sim.fleet"),  # the server shipping the simulator
    ("sim/charger.py", "import storage.database"),  # the simulator reaching into storage
]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_contracts_hold_for_the_tree_as_it_is(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.parametrize(("module", "line"), WRONG_WAYS)
def test_an_import_pointing_the_wrong_way_breaks_a_contract(
    tree: Path, module: str, line: str
) -> None:
    path = tree / module
    original = path.read_text(encoding="utf-8")
    path.write_text(original + f"\n{line}  # noqa\n", encoding="utf-8")
    try:
        result = lint_imports(tree)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
