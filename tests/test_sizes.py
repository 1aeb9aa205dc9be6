"""Size limits of the package (issue 23): no function of ``onceforall/`` above 80 lines (the CLI's parser, a table of
options, excepted) and no module above 600 lines; a long function is a place where several things are done at
once, and a long module several rooms in one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onceforall"
MAX_FUNCTION = 80
MAX_MODULE = 600
EXCEPTED = {"onceforall/cli.py:build_parser"}  # one add_argument after another: a table, not logic


def oversized(root: Path = PACKAGE) -> list[str]:
    """``path:function (N lines)`` and ``path (N lines)`` for every function and module over the limits."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE:
            out.append(f"{rel} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION and f"{rel}:{node.name}" not in EXCEPTED:
                    out.append(f"{rel}:{node.name} ({n} lines)")
    return out


def test_no_function_above_80_lines_and_no_module_above_600():
    found = oversized()
    assert not found, f"over the size limits ({MAX_FUNCTION} lines a function, {MAX_MODULE} a module): {found}"


def test_the_size_check_sees_a_long_function(tmp_path):
    """Not vacuous: a function of 81 lines and a module of 601 are reported."""
    pkg = tmp_path / "onceforall"
    pkg.mkdir()
    (pkg / "long.py").write_text("def f():\n" + "    x = 1\n" * 80 + "\n" * 520)
    assert oversized(pkg) == ["onceforall/long.py (601 lines)", "onceforall/long.py:f (81 lines)"]
