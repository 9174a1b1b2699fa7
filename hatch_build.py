"""Build hook: compiles the optional C accelerators (``plugins/_native/*.c``) into the source
tree (so editable installs find them) and ships them in wheels.

A failed compilation (no C compiler, no Python headers) is not an error: the gateway falls back
to the pure-Python code paths, which give the same results more slowly. Set
``PIPELINE_BUILD_NATIVE=0`` to skip the compilation, or ``=require`` to make a failure fatal
(CI does, so the accelerated paths are what gets tested).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# extension module name -> its C sources (relative to the project root)
EXTENSIONS: dict[str, list[str]] = {
    "plugins._native._agentscan": ["plugins/_native/_agentscan.c"],
    "plugins._native._tracewire": ["plugins/_native/_tracewire.c"],
    "plugins._native._spanscan": ["plugins/_native/_spanscan.c"],
    "plugins._native._otlpvalid": ["plugins/_native/_otlpvalid.c"],
    "plugins._native._route": ["plugins/_native/_route.c"],
    "plugins._native._tailscan": ["plugins/_native/_tailscan.c"],
}
# extensions that need a system library (its headers at build time): module -> (sources, library)
LIBRARY_EXTENSIONS: dict[str, tuple[list[str], str]] = {
    # the OTLP receiver's native gRPC server (HTTP/2 by libnghttp2: apt install libnghttp2-dev)
    "plugins._native._h2server": (["plugins/_native/_h2server.c"], "nghttp2"),
}


# libnghttp2 must have the fixes of Rapid Reset (CVE-2023-44487, 1.57.0) and of the CONTINUATION
# flood (CVE-2024-28182, 1.61.0): each added a function, which distributions that backport the
# fix export too (Debian 12's 1.52.0-1+deb12u2 does). The probe links a program calling both.
NGHTTP2_PROBE = """
#include <stdio.h>
#include <nghttp2/nghttp2.h>
void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *, uint64_t, uint64_t);
void nghttp2_option_set_max_continuations(nghttp2_option *, size_t);
int main(void)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return 1;
    FIXES
    nghttp2_option_del(opt);
    printf("%s\\n", nghttp2_version(0)->version_str);
    return 0;
}
"""
NGHTTP2_FIX_CALLS = (
    "nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);"
    " nghttp2_option_set_max_continuations(opt, 8);"
)


def nghttp2_problem() -> str | None:
    """``None`` when libnghttp2 (headers and library) has both fixes; else why not."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    with tempfile.TemporaryDirectory() as tmp:

        def links(fixes: str) -> str | None:
            src = Path(tmp) / "probe.c"
            src.write_text(NGHTTP2_PROBE.replace("FIXES", fixes))
            exe = Path(tmp) / "probe"
            build = subprocess.run(
                [*cc, str(src), "-o", str(exe), "-lnghttp2"], capture_output=True, text=True
            )
            if build.returncode != 0:
                return None
            run = subprocess.run([str(exe)], capture_output=True, text=True)
            return run.stdout.strip() if run.returncode == 0 else None

        if links(NGHTTP2_FIX_CALLS) is not None:
            return None
        version = links("")
        if version is None:
            return "libnghttp2 or its headers are not installed"
        return (
            f"libnghttp2 {version} lacks the fixes of Rapid Reset (CVE-2023-44487, 1.57.0) or "
            "of the CONTINUATION flood (CVE-2024-28182, 1.61.0)"
        )


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
        strict = os.environ.get("PIPELINE_BUILD_NATIVE", "1").strip().lower() == "require"
        return compile_native(Path(self.root), strict=strict)


def compile_native(
    root: Path,
    *,
    strict: bool,
    output: Path | None = None,
    build_temp: Path | None = None,
    flags: list[str] | None = None,
    link_flags: list[str] | None = None,
) -> list[str]:
    """Compiles every accelerator; returns the paths of the modules built (relative to
    ``output``). By default into the source tree with the release flags; the sanitizer and
    fuzzing builds (``tests/fuzz/build.py``) give another ``output`` and their own flags (the
    compiler is the one ``CC`` names, as for any setuptools build). A module that needs a
    missing system library is left out with a note unless ``strict``."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    depends = [str(h.relative_to(root)) for h in (root / "plugins" / "_native").glob("*.h")]
    compile_args = flags if flags is not None else ["-O2", "-Wall", "-Wno-unused-function"]
    link_args = link_flags or []

    def build(extensions: list[Extension]) -> list[str]:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            dist = Distribution({"name": "pipeline-gateway-native", "ext_modules": extensions})
            cmd = build_ext(dist)
            cmd.inplace = output is None
            if output is not None:
                cmd.build_lib = str(output)
            cmd.build_temp = str(build_temp or root / "build" / "native")
            cmd.ensure_finalized()
            cmd.run()
            base = root if output is None else output
            return [
                str(Path(cmd.get_ext_fullpath(ext.name)).resolve().relative_to(base.resolve()))
                for ext in extensions
            ]
        finally:
            os.chdir(cwd)

    def extension(name: str, sources: list[str], libraries: list[str] | None = None) -> Extension:
        return Extension(
            name,
            sources,
            depends=depends,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=libraries or [],
        )

    built = build([extension(name, sources) for name, sources in EXTENSIONS.items()])
    # one at a time: a missing library only leaves its own module out (outside CI)
    for name, (sources, library) in LIBRARY_EXTENSIONS.items():
        if library == "nghttp2":
            problem = nghttp2_problem()
            if problem is not None:
                message = (
                    f"pipeline: {name} was not built: {problem}; grpcio's gRPC server and "
                    "client are used instead (Debian/Ubuntu: apt install libnghttp2-dev, "
                    "with the distribution's security updates)"
                )
                if strict:
                    raise RuntimeError(message)
                print(message, file=sys.stderr)
                continue
        try:
            built += build([extension(name, sources, [library])])
        except Exception as exc:
            if strict:
                raise
            print(
                f"pipeline: {name} was not built ({exc}); it needs lib{library} and its "
                f"headers (Debian/Ubuntu: apt install lib{library}-dev)",
                file=sys.stderr,
            )
    return built
