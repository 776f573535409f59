"""Short modules and short functions (issue 9): a module over MODULE_LINES or a function over FUNCTION_LINES
is a sign that it does more than one thing. The limits are soft in spirit, hard here: split, don't raise them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINES = 420
FUNCTION_LINES = 60
PRODUCT = ("gateway", "drivers", "hil")


def sources():
    for folder in PRODUCT:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_module_is_long():
    long = {str(p.relative_to(ROOT)): n for p in sources() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_function_is_long():
    long = {}
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"
