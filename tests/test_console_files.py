"""The console's and the browser client's files as a wheel installs them: every file under
``console/`` and ``static/`` is matched by a ``[tool.setuptools.package-data]`` glob (globs do not
cross folders, so a page split into a sub-folder needs its own), and each console script stays a
small module (STYLE.md: under 600 lines)."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "wrenmq"


def test_console_every_file_is_in_the_wheels_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wrenmq"]
    packaged = {Path(p).resolve() for pattern in globs for p in glob.glob(str(PACKAGE / pattern))}
    on_disk = {
        p.resolve()
        for folder in ("console", "static")
        for p in (PACKAGE / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing = sorted(str(p.relative_to(PACKAGE)) for p in on_disk - packaged)
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_console_scripts_are_small_modules() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in (PACKAGE / "console").rglob("*.js")}
    assert sizes and all(n < 600 for n in sizes.values()), {k: n for k, n in sizes.items() if n >= 600}
