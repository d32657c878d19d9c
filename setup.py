"""Build hook: compile the hot path with mypyc, keeping the pure-Python modules as the fallback.

The modules below are the per-message path (codec, routing, sessions, the connection protocol).
mypyc turns them into C extensions, about twice as fast (see BENCHMARKS.md); the same .py files
remain the source of truth and the fallback:

- ``WRENMQ_PURE_PYTHON=1`` skips compilation;
- an editable install (``pip install -e .``) is always pure Python, so edits take effect without
  a rebuild and a stale extension can never shadow a changed module;
- if mypyc or a C compiler is missing, or compilation fails, the install goes on without it.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED_MODULES = [
    "src/wrenmq/mqtt/errors.py",
    "src/wrenmq/mqtt/packets.py",
    "src/wrenmq/mqtt/properties.py",
    "src/wrenmq/mqtt/codec.py",
    "src/wrenmq/mqtt/topics.py",
    "src/wrenmq/mqtt/server.py",
    "src/wrenmq/broker/limits.py",
    "src/wrenmq/broker/stats.py",
    "src/wrenmq/broker/hookset.py",
    "src/wrenmq/broker/message.py",
    "src/wrenmq/broker/journal.py",
    "src/wrenmq/broker/router.py",
    "src/wrenmq/broker/retain.py",
    "src/wrenmq/broker/session.py",
    "src/wrenmq/broker/wills.py",
    "src/wrenmq/broker/sessions.py",
    "src/wrenmq/broker/subscriptions.py",
    "src/wrenmq/broker/admission.py",
    "src/wrenmq/broker/persist.py",
    "src/wrenmq/broker/inbound.py",
    "src/wrenmq/broker/connection.py",
    "src/wrenmq/broker/broker.py",
]


class OptionalBuildExt(build_ext):
    """Compile the extensions if possible; otherwise install the pure-Python modules."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            # All or nothing: mypyc's modules share one runtime library, so a partial set would not import.
            for ext in self.extensions:
                for path in (self.get_ext_fullpath(ext.name),):
                    if os.path.exists(path):
                        os.remove(path)
            print(f"wrenmq: compiling the hot path failed ({exc}); installing pure Python", file=sys.stderr)
            self.extensions = []


# Commands that only write metadata or pack the sources: running mypyc for them would cost a minute
# for nothing (the sdist ships the .py files; whoever builds the wheel from it compiles them).
_SOURCE_ONLY_COMMANDS = {"sdist", "egg_info", "dist_info"}


def _ext_modules() -> list:  # type: ignore[type-arg]
    if os.environ.get("WRENMQ_PURE_PYTHON") == "1" or "editable_wheel" in sys.argv:
        return []
    if _SOURCE_ONLY_COMMANDS.intersection(sys.argv[1:2]):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("wrenmq: mypyc not available; installing pure Python", file=sys.stderr)
        return []
    try:
        # The build environment holds only the build requirements: third-party imports (pydantic,
        # uvloop) are typed as Any there, which is fine, as the compiled modules do not lean on them.
        return mypycify(["--ignore-missing-imports", *COMPILED_MODULES], opt_level="3")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        print(f"wrenmq: mypyc failed ({exc!r}); installing pure Python", file=sys.stderr)
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
