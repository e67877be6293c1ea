#!/usr/bin/env python3
"""weft as other projects use it: installed with `meson install --destdir`
from a built folder, then consumed three ways, each building and running
program.cc (a TCP round trip between fibers):

- pkg-config: `pkg-config --cflags --libs weft` with only weft's .pc visible
  (none of spdlog, liburing, libdw: the public headers need none), the
  library's SONAME versioned, and a C++17 build stopped by weft's #error;
- CMake: find_package(weft CONFIG) and the imported target weft::weft;
- meson: weft as a subproject found by dependency('weft') through a wrap's
  [provide], building the library only (no tests, benchmarks or examples;
  no werror).

Prints one line per case and "consumers: N passed, M failed"; exits 1 on any
failure. The compiler is $CXX (default c++).

    tests/consumers/run.py BUILD_DIR
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
PROGRAM = os.path.join(HERE, "program.cc")
OK_LINE = "weft consumer: ok"


class Failed(Exception):
    pass


def run(cmd, timeout=600, env=None, cwd=None, expect_ok=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if expect_ok and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise Failed(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n      " +
                     "\n      ".join(tail))
    return proc


def run_program(path, libdir=None):
    env = dict(os.environ)
    if libdir:
        env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"]
                                           if env.get("LD_LIBRARY_PATH") else "")
    out = run([path], timeout=60, env=env).stdout.strip()
    if out != OK_LINE:
        raise Failed(f"{path} printed {out!r}")


def install(build_dir, dest):
    """Installs build_dir under dest; returns (root, libdir): the prefix and
    the library folder as they lie under dest."""
    run(["meson", "install", "-C", build_dir, "--destdir", dest, "--no-rebuild", "--quiet"])
    opts = json.loads(run(["meson", "introspect", "--buildoptions", build_dir]).stdout)
    value = {o["name"]: o["value"] for o in opts}
    prefix = value["prefix"]
    root = dest + prefix
    libdir = value["libdir"]
    libdir = dest + libdir if os.path.isabs(libdir) else os.path.join(root, libdir)
    return root, libdir


def case_pkg_config(dest, libdir, work, cxx):
    env = dict(os.environ)
    # Only weft's .pc: a Requires on spdlog or liburing would fail here.
    env["PKG_CONFIG_LIBDIR"] = os.path.join(libdir, "pkgconfig")
    env.pop("PKG_CONFIG_PATH", None)
    # The .pc names the real prefix: under the destdir its paths move with it.
    env["PKG_CONFIG_SYSROOT_DIR"] = dest
    flags = run(["pkg-config", "--cflags", "--libs", "weft"], env=env).stdout.split()
    leaked = [f for f in flags if re.search(r"spdlog|uring|dw|kqueue|SPDLOG", f)]
    if leaked:
        raise Failed(f"weft.pc passes on private dependencies: {leaked}")
    sonames = [l for l in run(["readelf", "-d", os.path.join(libdir, "libweft.so")]).stdout
               .splitlines() if "SONAME" in l]
    if not sonames or not re.search(r"\[libweft\.so\.\d+(\.\d+)?\]", sonames[0]):
        raise Failed(f"libweft.so has no versioned SONAME: {sonames}")
    exe = os.path.join(work, "consumer")
    run([cxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", PROGRAM, "-o", exe] + flags)
    run_program(exe, libdir)
    # Below C++20 the first error is weft's own, saying what to do.
    proc = run([cxx, "-std=c++17", "-fsyntax-only", PROGRAM] + [f for f in flags if f.startswith("-I")],
               expect_ok=False)
    first = next((l for l in proc.stderr.splitlines() if "error" in l), "")
    if proc.returncode == 0 or "weft needs C++20" not in first:
        raise Failed(f"a C++17 build's first error is not weft's #error: {first!r}")
    return f"SONAME {sonames[0].split()[-1]}, C++17 stopped by weft's #error"


def case_cmake(root, libdir, work):
    src = os.path.join(work, "src")
    shutil.copytree(os.path.join(HERE, "cmake"), src)
    shutil.copy(PROGRAM, src)
    build = os.path.join(work, "build")
    run(["cmake", "-S", src, "-B", build, f"-DCMAKE_PREFIX_PATH={root}"])
    run(["cmake", "--build", build])
    run_program(os.path.join(build, "consumer"), libdir)
    return "find_package(weft 0.1 CONFIG) and weft::weft"


def copy_weft_tree(to):
    """The files git would commit (tracked, and untracked ones not ignored):
    the tree a wrap would fetch, without build folders."""
    if os.path.isdir(os.path.join(REPO, ".git")) and shutil.which("git"):
        files = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                     "--exclude-standard"]).stdout.split("\0")
        for f in filter(None, files):
            src = os.path.join(REPO, f)
            if not os.path.isfile(src):
                continue  # deleted in the worktree
            os.makedirs(os.path.dirname(os.path.join(to, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(to, f))
    else:
        shutil.copytree(REPO, to, ignore=shutil.ignore_patterns("build", ".git"))


def case_meson(work):
    src = os.path.join(work, "src")
    shutil.copytree(os.path.join(HERE, "meson"), src)
    shutil.copy(PROGRAM, src)
    copy_weft_tree(os.path.join(src, "subprojects", "weft"))
    # As a wrap from WrapDB would say it; the folder is there, so nothing is
    # fetched.
    with open(os.path.join(src, "subprojects", "weft.wrap"), "w") as f:
        f.write("[wrap-file]\ndirectory = weft\n\n[provide]\ndependency_names = weft\n")
    build = os.path.join(work, "build")
    run(["meson", "setup", build, src])
    targets = sorted(t["name"] for t in json.loads(
        run(["meson", "introspect", "--targets", build]).stdout))
    if targets != ["consumer", "weft"]:
        raise Failed(f"a subproject weft builds more than its library: targets {targets}")
    tests = run(["meson", "test", "-C", build, "--list"], expect_ok=False).stdout
    if "weft" in tests:
        raise Failed(f"weft's tests joined the consumer's `meson test`: {tests.strip()}")
    opts = {o["name"]: o["value"] for o in json.loads(
        run(["meson", "introspect", "--buildoptions", build]).stdout)}
    if opts.get("weft:werror"):
        raise Failed("the subproject weft builds with werror")
    run(["meson", "compile", "-C", build], timeout=1200)
    run_program(os.path.join(build, "consumer"))
    return "dependency('weft') through a wrap's [provide]; the library alone, no werror"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build_dir = os.path.abspath(sys.argv[1])
    cxx = os.environ.get("CXX", "c++")
    work = tempfile.mkdtemp(prefix="weft-consumers-")
    passed = failed = 0
    try:
        try:
            dest = os.path.join(work, "dest")
            root, libdir = install(build_dir, dest)
        except Failed as e:
            print(f"[FAIL] meson install --destdir: {e}")
            print("consumers: 0 passed, 1 failed")
            return 1
        cases = [
            ("pkg-config consumer", lambda w: case_pkg_config(dest, libdir, w, cxx)),
            ("CMake consumer", lambda w: case_cmake(root, libdir, w)),
            ("meson subproject consumer", case_meson),
        ]
        for name, fn in cases:
            case_work = os.path.join(work, name.split()[0].lower())
            os.makedirs(case_work)
            start = time.monotonic()
            try:
                detail = fn(case_work)
                passed += 1
                print(f"[  OK  ] {name}: {detail} ({time.monotonic() - start:.1f} s)", flush=True)
            except (Failed, subprocess.TimeoutExpired, OSError) as e:
                failed += 1
                print(f"[ FAIL ] {name}: {e}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"consumers: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
