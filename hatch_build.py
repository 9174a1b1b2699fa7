"""Build hook: compiles the optional C accelerators (``plugins/_native/*.c``) into the source
tree (so editable installs find them) and ships them in wheels.

A failed compilation (no C compiler, no Python headers) is not an error: the gateway falls back
to the pure-Python code paths, which give the same results more slowly. Set
``PIPELINE_BUILD_NATIVE=0`` to skip the compilation, or ``=require`` to make a failure fatal
(CI does, so the accelerated paths are what gets tested).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# extension module name -> its C sources (relative to the project root)
EXTENSIONS: dict[str, list[str]] = {
    "plugins._native._agentscan": ["plugins/_native/_agentscan.c"],
    "plugins._native._tracewire": ["plugins/_native/_tracewire.c"],
    "plugins._native._spanscan": ["plugins/_native/_spanscan.c"],
    "plugins._native._otlpvalid": ["plugins/_native/_otlpvalid.c"],
}
# extensions that need a system library (its headers at build time): module -> (sources, library)
LIBRARY_EXTENSIONS: dict[str, tuple[list[str], str]] = {
    # the OTLP receiver's native gRPC server (HTTP/2 by libnghttp2: apt install libnghttp2-dev)
    "plugins._native._h2server": (["plugins/_native/_h2server.c"], "nghttp2"),
}


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        mode = os.environ.get("PIPELINE_BUILD_NATIVE", "1").strip().lower()
        if mode in ("0", "false", "no", "off"):
            return
        try:
            built = self._compile()
        except Exception as exc:
            if mode == "require":
                raise
            print(
                f"pipeline: the C accelerators were not built ({exc}); "
                "the pure-Python paths will be used",
                file=sys.stderr,
            )
            return
        if version != "editable":
            for path in built:
                build_data["force_include"][path] = path
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def _compile(self) -> list[str]:
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        root = Path(self.root)
        depends = [str(h.relative_to(root)) for h in (root / "plugins" / "_native").glob("*.h")]
        flags = ["-O2", "-Wall", "-Wno-unused-function"]

        def build(extensions: list[Extension]) -> list[str]:
            cwd = os.getcwd()
            os.chdir(root)
            try:
                dist = Distribution({"name": "pipeline-gateway-native", "ext_modules": extensions})
                cmd = build_ext(dist)
                cmd.inplace = True
                cmd.build_temp = str(root / "build" / "native")
                cmd.ensure_finalized()
                cmd.run()
                return [
                    str(Path(cmd.get_ext_fullpath(ext.name)).resolve().relative_to(root))
                    for ext in extensions
                ]
            finally:
                os.chdir(cwd)

        built = build(
            [
                Extension(name, sources, depends=depends, extra_compile_args=flags)
                for name, sources in EXTENSIONS.items()
            ]
        )
        # one at a time: a missing library only leaves its own module out (outside CI)
        strict = os.environ.get("PIPELINE_BUILD_NATIVE", "1").strip().lower() == "require"
        for name, (sources, library) in LIBRARY_EXTENSIONS.items():
            try:
                built += build(
                    [
                        Extension(
                            name,
                            sources,
                            depends=depends,
                            extra_compile_args=flags,
                            libraries=[library],
                        )
                    ]
                )
            except Exception as exc:
                if strict:
                    raise
                print(
                    f"pipeline: {name} was not built ({exc}); it needs lib{library} and its "
                    f"headers (Debian/Ubuntu: apt install lib{library}-dev)",
                    file=sys.stderr,
                )
        return built
