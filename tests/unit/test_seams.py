"""The fast path's declared seams (README "Layout").

rproxy/_fastpath.pyx is ONE compile unit made of the rproxy/fastpath/*.pxi
includes, grouped into areas.  Each area has a .pxd (rproxy/fastpath/<area>.pxd,
gathered by rproxy/fastpath/seams.pxd) that declares the cdef functions OTHER
areas may call.  Two checks keep them true:
- Cython: the module compiled once more with seams.pxd included from
  _fastpath.pxd, so every declaration is checked against its definition (the
  build leaves seams.pxd out: declared functions would be exported through
  __pyx_capi__ and lose inlining, see _fastpath.pxd);
- this test: a function used from another area must be declared in its own
  area's .pxd, and a .pxd declares only functions that exist in its area.

`python tests/unit/test_seams.py [-v]` prints the cross-area uses, the pairs
of files that call each other (the cycles the layering avoids), and the
declaration lines a .pxd lacks, ready to paste."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

FASTPATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "rproxy", "fastpath")

# area -> the .pxi files that make it (one .pxd per area, same name).  The
# types (defs.pxi) and the per-worker globals (globals.pxi) are gathered by
# _fastpath.pxd itself and define no functions.
AREAS = {
    "errlog": ["errlog.pxi"],
    "cfgutil": ["cfgutil.pxi"],
    "states": ["states.pxi"],
    "metrics": ["metrics.pxi"],
    "buffers": ["buffers.pxi"],
    "bodybuf": ["bodybuf.pxi"],
    "tls": ["tls.pxi"],
    "timers": ["timers.pxi"],
    "conn": ["conn.pxi"],
    "accesslog": ["accesslog.pxi"],
    "http": ["http.pxi"],
    "routing": ["routing.pxi"],
    "balance": ["balance.pxi"],
    "upstream": ["upstream.pxi", "proxyproto.pxi"],
    "h2": ["h2.pxi"],
    "limits": ["limits.pxi", "redis.pxi"],
    "downstream": ["downstream.pxi", "pipeline.pxi", "redirect.pxi", "splice.pxi"],
    "pool": ["pool.pxi"],
    "tunnel": ["tunnel.pxi"],
    "acme": ["acme.pxi"],
    "edge": ["edge.pxi", "static.pxi", "filecache.pxi"],
    "health": ["health.pxi"],
    "loop": ["loop.pxi", "control.pxi"],
    "worker": ["worker.pxi"],
    "compress": ["compress.pxi"],
    "cache": ["cache.pxi", "cachepolicy.pxi"],
    "testhook": ["testhook.pxi"],
}
SHARED = {"defs.pxi", "globals.pxi"}

# a module-level cdef function definition: name and everything up to its ':'
CDEF_FUNC = re.compile(r"^cdef\s+(?:inline\s+)?(?:[\w \t\*]+?\b)?(\w+)\s*\([^)]*\)[^:\n]*:", re.M)
# a declaration in a .pxd: the same without the body
CDEF_DECL = re.compile(r"^cdef\s+(?!struct\b|enum\b|union\b|extern\b|class\b)[\w \t\*]+?\b(\w+)\s*\(", re.M)
# strings (triple-quoted first) and comments: blanked before looking for names
NOISE = re.compile(r'[bBrRuUfF]{0,2}("""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')'
                   r"|#[^\n]*")
WORD = re.compile(r"\b[A-Za-z_]\w*\b")


def blank(text: str) -> str:
    """The text with strings and comments replaced by spaces (lines kept)."""
    return NOISE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def parse(sources: dict[str, str], areas: dict[str, list[str]]):
    """sources: file name -> text.  Returns (defined, uses): defined maps a
    function to (area, file); uses maps (caller area, callee) to the files
    that use the callee from that area (called, or its address taken)."""
    area_of = {f: a for a, fs in areas.items() for f in fs}
    defined: dict[str, tuple[str, str]] = {}
    for fname, text in sources.items():
        for m in CDEF_FUNC.finditer(blank(text)):
            defined[m.group(1)] = (area_of.get(fname, ""), fname)
    uses: dict[tuple[str, str], set[str]] = defaultdict(set)
    for fname, text in sources.items():
        for w in WORD.findall(blank(text)):
            if w in defined and defined[w][1] != fname:
                uses[(area_of.get(fname, ""), w)].add(fname)
    return defined, uses


def declared(pxd_text: str) -> set[str]:
    return {m.group(1) for m in CDEF_DECL.finditer(blank(pxd_text))}


def check(sources: dict[str, str], pxds: dict[str, str], areas: dict[str, list[str]]) -> list[str]:
    """Every fault: undeclared cross-area uses, declarations of functions that
    are not (or no longer) in the area, files that belong to no area."""
    faults = []
    known = {f for fs in areas.values() for f in fs} | SHARED
    faults += [f"{f}: in no area (add it to AREAS and to _fastpath.pyx)" for f in sorted(sources) if f not in known]
    defined, uses = parse(sources, areas)
    decl = {a: declared(pxds.get(a, "")) for a in areas}
    for (caller, fn), files in sorted(uses.items()):
        area = defined[fn][0]
        if caller != area and fn not in decl.get(area, ()):
            faults.append(f"{fn} ({defined[fn][1]}) is used by {', '.join(sorted(files))} "
                          f"but not declared in {area}.pxd")
    for area, names in sorted(decl.items()):
        for fn in sorted(names):
            if fn not in defined or defined[fn][0] != area:
                faults.append(f"{area}.pxd declares {fn}, which is not defined in {', '.join(areas[area])}")
    return faults


def load():
    sources, pxds = {}, {}
    for name in sorted(os.listdir(FASTPATH)):
        path = os.path.join(FASTPATH, name)
        if name.endswith(".pxi"):
            sources[name] = open(path).read()
        elif name.endswith(".pxd"):
            pxds[name[:-4]] = open(path).read()
    return sources, pxds


def file_pairs_both_ways(sources: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of .pxi files each of which uses a function defined in the other."""
    defined, _ = parse(sources, {f: [f] for f in sources})
    edges = set()
    for fname, text in sources.items():
        for w in set(WORD.findall(blank(text))):
            if w in defined and defined[w][1] != fname:
                edges.add((fname, defined[w][1]))
    return sorted((a, b) for a, b in edges if a < b and (b, a) in edges)


def declaration(text: str, name: str) -> str:
    """The .pxd line for cdef function `name` defined in `text`: its
    definition's signature on one line, without `inline` and the colon."""
    for m in CDEF_FUNC.finditer(blank(text)):
        if m.group(1) == name:
            sig = re.sub(r"#[^\n]*", "", text[m.start():m.end() - 1])
            sig = re.sub(r"\s+", " ", sig).replace("cdef inline ", "cdef ")
            sig = re.sub(r"=[^,)]+", "=*", sig)        # a default value is declared `=*`
            return sig.replace("( ", "(").replace(" )", ")").strip()
    raise KeyError(name)


def missing_declarations(sources, pxds, areas) -> dict[str, list[str]]:
    """area -> the declaration lines its .pxd lacks (what to paste)."""
    defined, uses = parse(sources, areas)
    out: dict[str, list[str]] = defaultdict(list)
    for (caller, fn) in sorted(uses):
        area, fname = defined[fn]
        if caller != area and fn not in declared(pxds.get(area, "")):
            line = declaration(sources[fname], fn)
            if line not in out[area]:
                out[area].append(line)
    return dict(out)


# ---- the seams of the real sources ---------------------------------------

def test_every_cross_area_use_is_declared():
    sources, pxds = load()
    assert sources and pxds, "no fast-path sources found"
    assert check(sources, pxds, AREAS) == []


def test_every_area_has_its_pxd_gathered():
    with open(os.path.join(FASTPATH, "seams.pxd")) as f:
        gathered = re.findall(r'^include "(\w+)\.pxd"', f.read(), re.M)
    assert sorted(gathered) == sorted(AREAS)
    with open(os.path.join(FASTPATH, "..", "_fastpath.pyx")) as f:
        included = re.findall(r'^include "fastpath/(\w+\.pxi)"', f.read(), re.M)
    assert sorted(included) == sorted({f for fs in AREAS.values() for f in fs} | {"globals.pxi"})


def cython(tmp_path, pyx: str) -> subprocess.CompletedProcess:
    """Cython (the pinned one, from the test extras) on `pyx`, C to tmp_path."""
    pytest.importorskip("Cython", reason="Cython is in the test extras (pip install '.[test]')")
    return subprocess.run([sys.executable, "-m", "cython", "-3", pyx, "-o", str(tmp_path / "out.c")],
                          cwd=os.path.dirname(os.path.dirname(pyx)), capture_output=True, text=True,
                          timeout=600)


def test_cython_checks_every_declaration_against_its_definition(tmp_path):
    """The real sources, with seams.pxd included from _fastpath.pxd."""
    src = os.path.join(FASTPATH, "..")
    dst = tmp_path / "rproxy"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.c", "*.so", "*.html", "*.py", "__pycache__"))
    with open(dst / "_fastpath.pxd", "a") as f:
        f.write('\ninclude "fastpath/seams.pxd"\n')
    r = cython(tmp_path, str(dst / "_fastpath.pyx"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_cython_rejects_a_declaration_that_does_not_match(tmp_path):
    """What the check above relies on: a module's .pxd declaration must match
    the definition the .pyx includes, exactly (here: the parameter type)."""
    pkg = tmp_path / "m"
    (pkg / "parts").mkdir(parents=True)
    (pkg / "parts" / "low.pxd").write_text("cdef int low_api(int x) noexcept nogil\n")
    (pkg / "parts" / "low.pxi").write_text("cdef int low_api(long x) noexcept nogil:\n    return <int>x\n")
    (pkg / "mod.pxd").write_text('include "parts/low.pxd"\n')
    (pkg / "mod.pyx").write_text('include "parts/low.pxi"\n')
    r = cython(tmp_path, str(pkg / "mod.pyx"))
    assert r.returncode != 0 and "does not match" in r.stdout + r.stderr, r.stdout + r.stderr
    (pkg / "parts" / "low.pxi").write_text("cdef int low_api(int x) noexcept nogil:\n    return x\n")
    r = cython(tmp_path, str(pkg / "mod.pyx"))
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the checker itself, on small synthetic sources ----------------------

SYN_AREAS = {"low": ["low.pxi"], "high": ["high.pxi"]}
SYN = {
    "low.pxi": ('cdef int low_api(int x) noexcept nogil:\n    return low_priv(x)\n\n'
                'cdef inline int low_priv(int x) noexcept nogil:\n    return x  # high_api( in a comment\n'),
    "high.pxi": ('cdef int high_api(int x) noexcept nogil:\n    rp_elog(2, 1, "low_priv(%d)", x)\n'
                 '    return low_api(x)\n'),
}


def test_checker_accepts_declared_uses():
    pxds = {"low": "cdef int low_api(int x) noexcept nogil\n", "high": ""}
    assert check(SYN, pxds, SYN_AREAS) == []


def test_checker_reports_an_undeclared_cross_area_call():
    faults = check(SYN, {"low": "", "high": ""}, SYN_AREAS)
    assert faults == ["low_api (low.pxi) is used by high.pxi but not declared in low.pxd"]


def test_checker_reports_a_call_through_a_pointer_too():
    src = dict(SYN, **{"high.pxi": "cdef int high_api(int x) noexcept nogil:\n    g_cb = low_priv\n    return 0\n"})
    faults = check(src, {"low": "", "high": ""}, SYN_AREAS)
    assert faults == ["low_priv (low.pxi) is used by high.pxi but not declared in low.pxd"]


def test_checker_reports_a_stale_declaration():
    pxds = {"low": "cdef int low_api(int x) noexcept nogil\ncdef int low_gone(int x) noexcept nogil\n",
            "high": "cdef int low_priv(int x) noexcept nogil\n"}
    assert check(SYN, pxds, SYN_AREAS) == [
        "high.pxd declares low_priv, which is not defined in high.pxi",
        "low.pxd declares low_gone, which is not defined in low.pxi",
    ]


def test_checker_reports_a_file_in_no_area():
    src = dict(SYN, **{"new.pxi": "cdef int n() noexcept nogil:\n    return 0\n"})
    assert check(src, {"low": "cdef int low_api(int x) noexcept nogil\n"}, SYN_AREAS) == [
        "new.pxi: in no area (add it to AREAS and to _fastpath.pyx)"]


def test_missing_declarations_are_spelled_out():
    src = dict(SYN, **{"low.pxi": SYN["low.pxi"].replace("cdef int low_api(int x) noexcept nogil:",
                                                         "cdef inline int low_api(int x,\n        int y=0) noexcept nogil:  # c")})
    assert missing_declarations(SYN, {"low": ""}, SYN_AREAS) == {"low": ["cdef int low_api(int x) noexcept nogil"]}
    assert missing_declarations(src, {"low": ""}, SYN_AREAS) == {
        "low": ["cdef int low_api(int x, int y=*) noexcept nogil"]}


def test_pairs_both_ways():
    src = dict(SYN, **{"low.pxi": SYN["low.pxi"] + "cdef int back() noexcept nogil:\n    return high_api(1)\n"})
    assert file_pairs_both_ways(SYN) == []
    assert file_pairs_both_ways(src) == [("high.pxi", "low.pxi")]


if __name__ == "__main__":
    sources, pxds = load()
    defined, uses = parse(sources, AREAS)
    cross = sorted((caller, defined[fn][0], fn) for (caller, fn) in uses if caller != defined[fn][0])
    if "-v" in sys.argv:
        for caller, area, fn in cross:
            print(f"{caller:12} -> {area:12} {fn}")
    pairs = file_pairs_both_ways(sources)
    print(f"{len(defined)} cdef functions, {len({fn for _, _, fn in cross})} used across areas "
          f"({len(cross)} area->function uses)")
    print(f"{len(pairs)} pairs of .pxi files that use each other:")
    for a, b in pairs:
        print(f"  {a} <-> {b}")
    for fault in check(sources, pxds, AREAS):
        print("FAULT", fault)
    for area, lines in missing_declarations(sources, pxds, AREAS).items():
        print(f"to add to rproxy/fastpath/{area}.pxd:")
        for line in lines:
            print("   ", line)
