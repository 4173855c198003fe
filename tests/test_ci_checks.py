"""CI fails on any lint, format or type error: each tool's exit status counts (PITFALLS 14).

Each test copies the project's checked-in files to a temporary folder, plants one kind of
error and runs ``scripts/check`` (which ``scripts/test`` and so ``.ci/run`` call) there.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the files git sees (committed or not), sharing this checkout's ``.venv``."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(
        listing, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    copy = tmp_path / "tree"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    if (ROOT / ".mypy_cache").is_dir():  # a warm cache: the planted error is all that is new
        shutil.copytree(ROOT / ".mypy_cache", copy / ".mypy_cache")
    return copy


def check(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's checks in ``tree``."""
    return subprocess.run(["scripts/check"], cwd=tree, capture_output=True, text=True, timeout=600)


def test_the_clean_tree_passes(tree: Path) -> None:
    result = check(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("planted", "tool_says"),
    [
        ("import os\n", "F401"),  # lint: an unused import
        ("x = {  'a':1}\n", "would be reformatted"),  # formatting only
        (
            '\ndef f() -> int:\n    """Say a number."""\n    return "not an int"\n',
            "Incompatible return value",
        ),  # types
    ],
    ids=["lint", "format", "types"],
)
def test_a_planted_error_fails_the_checks(tree: Path, planted: str, tool_says: str) -> None:
    module = tree / "orders" / "domain" / "planted_error.py"
    module.write_text('"""A module with one planted error."""\n\n' + planted)
    result = check(tree)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert tool_says in output
