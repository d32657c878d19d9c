"""The compiled boundary is written down once: setup.py's ``COMPILED_MODULES`` is what mypyc builds,
and the README's list between its ``compiled-modules`` markers must name exactly the same modules
(a wrenmq rule, no MQTT statement)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import wrenmq

ROOT = Path(__file__).resolve().parent.parent


def setup_modules() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return {path.removeprefix("src/wrenmq/") for path in paths}
    raise AssertionError("setup.py has no COMPILED_MODULES")


def readme_modules() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- compiled-modules -->", 1)[1].split("<!-- /compiled-modules -->", 1)[0]
    modules = set()
    for line in block.replace("\n  ", " ").splitlines():
        found = re.match(r"- `(\w+)/`: (.*)", line.strip())
        if found:
            modules |= {f"{found.group(1)}/{name}" for name in re.findall(r"`([\w.]+\.py)`", found.group(2))}
    return modules


def test_readme_names_exactly_the_compiled_modules() -> None:
    assert readme_modules() == setup_modules()


def test_compiled_modules_exist_and_are_in_the_package() -> None:
    package = Path(wrenmq.__file__).resolve().parent
    for module in setup_modules():
        assert (ROOT / "src" / "wrenmq" / module).is_file(), module
        stem = module.removesuffix(".py")
        assert any(package.glob(f"{stem}.py")) or any(package.glob(f"{stem}.*.so")), module
