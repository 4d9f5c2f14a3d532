"""Build the Cython fast path against llhttp's C API.

The `llhttp` package from PyPI installs `llhttp.h` as a "header" of the
distribution and exports every `llhttp_*` symbol from its extension module
`__llhttp`.  We compile against the header and deliberately do NOT link against
that module's file: its path inside pip's isolated build environment is gone
after installation.  At run time `rproxy.fastpath` imports `__llhttp` with
RTLD_GLOBAL first, so the dynamic loader resolves our undefined `llhttp_*`
symbols from it.

RPROXY_SANITIZE=1 builds the sanitizer variant (AddressSanitizer + UBSan, see
README "Memory safety"): `-fsanitize=address,undefined -fno-omit-frame-pointer
-O1 -g` on the compile AND the link line, and RPROXY_CHECK_STATES (every
state move checked against fastpath/states.pxi's tables), placed last so they win over
CFLAGS and over the normal build's -O2, and objects kept under build/asan so
a normal build's up-to-date objects are never reused for it (or the reverse).
llhttp must be rebuilt the same way for its code to be checked too:
tests/sanitize/run.sh does both.
"""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
SANITIZE = os.environ.get("RPROXY_SANITIZE") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]


def _prefixes():
    """Every prefix under which pip may have put llhttp's header."""
    seen = []
    # found, not imported: importing it loads its C module, which in the
    # sanitizer build (RPROXY_SANITIZE) aborts without the ASan runtime preloaded
    spec = importlib.util.find_spec("llhttp")     # present in the build environment
    if spec is not None and spec.origin:
        pkg_dir = os.path.dirname(os.path.abspath(spec.origin))
        # <prefix>/lib/pythonX.Y/site-packages/llhttp -> <prefix>
        seen.append(os.path.abspath(os.path.join(pkg_dir, "..", "..", "..", "..")))
    for p in (sysconfig.get_paths().get("data"), sys.prefix, sys.base_prefix):
        if p:
            seen.append(p)
    out = []
    for p in seen:
        if p not in out:
            out.append(p)
    return out


def find_llhttp_include():
    override = os.environ.get("RPROXY_LLHTTP_INCLUDE")
    if override:
        if not os.path.isfile(os.path.join(override, "llhttp.h")):
            sys.exit(f"rproxy build: RPROXY_LLHTTP_INCLUDE={override} has no llhttp.h")
        return override
    tried = []
    for prefix in _prefixes():
        # venvs use include/site/pythonX.Y/<dist>, plain prefixes include/pythonX.Y/<dist>
        for sub in (("include", "site", PYVER, "llhttp"), ("include", PYVER, "llhttp")):
            d = os.path.join(prefix, *sub)
            tried.append(d)
            if os.path.isfile(os.path.join(d, "llhttp.h")):
                return d
        hits = glob.glob(os.path.join(prefix, "include", "**", "llhttp", "llhttp.h"), recursive=True)
        if hits:
            return os.path.dirname(hits[0])
    sys.exit(
        "rproxy build: cannot find llhttp.h (from the PyPI package llhttp==9.3.0.0).\n"
        "  looked in:\n    " + "\n    ".join(tried) + "\n"
        "  install it with `pip install llhttp==9.3.0.0` or set RPROXY_LLHTTP_INCLUDE to the\n"
        "  directory that holds llhttp.h."
    )


# Compression libraries (rproxy/fastpath/compress.pxi): pkg-config module ->
# the Debian package that provides it.
COMPRESSION_LIBS = (("zlib", "zlib1g-dev"), ("libbrotlienc", "libbrotli-dev"), ("libzstd", "libzstd-dev"))


def pkg_config(flag, modules):
    return subprocess.run(["pkg-config", flag, *modules], check=True, capture_output=True,
                          text=True).stdout.split()


def find_compression_libs():
    """Include dirs and libraries of zlib, brotli's encoder and zstd, from
    pkg-config; a clear message naming the package when one is missing."""
    if shutil.which("pkg-config") is None:
        sys.exit("rproxy build: pkg-config is needed to find zlib, brotli and zstd "
                 "(Debian: apt-get install pkg-config " + " ".join(p for _, p in COMPRESSION_LIBS) + ")")
    missing = []
    for mod, pkg in COMPRESSION_LIBS:
        if subprocess.run(["pkg-config", "--exists", mod]).returncode != 0:
            missing.append((mod, pkg))
    if missing:
        sys.exit("rproxy build: compression libraries not found by pkg-config: "
                 + ", ".join(m for m, _ in missing) + "\n  Debian/Ubuntu: apt-get install "
                 + " ".join(p for _, p in missing) + "\n  (Fedora/RHEL: zlib-devel brotli-devel libzstd-devel)")
    mods = [m for m, _ in COMPRESSION_LIBS]
    cflags = pkg_config("--cflags", mods)
    libs = pkg_config("--libs", mods)
    return ([f[2:] for f in cflags if f.startswith("-I")],
            [f[2:] for f in libs if f.startswith("-L")],
            [f[2:] for f in libs if f.startswith("-l")])


def find_nghttp2():
    """libnghttp2's include dirs, library dirs and libraries (the HTTP/2
    client side, rproxy/fastpath/h2.pxi), from pkg-config; a message naming
    the package when it is missing."""
    if shutil.which("pkg-config") is None or subprocess.run(["pkg-config", "--exists", "libnghttp2"]).returncode != 0:
        sys.exit("rproxy build: libnghttp2 not found by pkg-config (module libnghttp2): HTTP/2 needs it.\n"
                 "  Debian/Ubuntu: apt-get install libnghttp2-dev   (Fedora/RHEL: libnghttp2-devel)")
    cflags = pkg_config("--cflags", ["libnghttp2"])
    libs = pkg_config("--libs", ["libnghttp2"])
    return ([f[2:] for f in cflags if f.startswith("-I")],
            [f[2:] for f in libs if f.startswith("-L")],
            [f[2:] for f in libs if f.startswith("-l")])


def extensions():
    from Cython.Build import cythonize

    inc = find_llhttp_include()
    cinc, cdirs, clibs = find_compression_libs()
    hinc, hdirs, hlibs = find_nghttp2()
    # every state move checked against its table (fastpath/states.pxi): the
    # sanitizer build, or any build with RPROXY_CHECK_STATES=1
    macros = []
    if SANITIZE or os.environ.get("RPROXY_CHECK_STATES") == "1":
        macros.append(("RPROXY_CHECK_STATES", "1"))
    # -O2 comes after CFLAGS on the command line (extra_compile_args are last),
    # so the sanitizer build must not add it: its own -O1 -g win instead.
    compile_args = ["-fno-strict-aliasing", "-Wno-unused-function"]
    link_args = []
    if SANITIZE:
        compile_args += SANITIZE_FLAGS
        link_args += SANITIZE_FLAGS
    else:
        compile_args.insert(0, "-O2")
    ext = Extension(
        "rproxy._fastpath",
        sources=["rproxy/_fastpath.pyx"],
        include_dirs=[inc, "rproxy/includes", *cinc, *hinc],
        library_dirs=[*cdirs, *hdirs],
        libraries=[*clibs, *hlibs],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros,
    )
    return cythonize(
        [ext],
        language_level=3,
        annotate=os.environ.get("RPROXY_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": False,
        },
    )


setup(
    ext_modules=extensions(),
    # the sanitizer build keeps its objects apart (build_ext skips a compile
    # whose output is newer than its sources, whatever the flags were)
    options={"build": {"build_base": os.path.join("build", "asan")}} if SANITIZE else {},
)
