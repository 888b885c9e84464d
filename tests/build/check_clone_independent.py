#!/usr/bin/env python3
"""tests/build/check_clone_independent.py — no compile command names the checkout's directory
except where it is meant to.

ccache hashes the command line. CCACHE_BASEDIR makes -I, -include and source paths relative,
but a path inside a -D value stays as written, so a define holding the checkout's path makes
that source miss the cache in every fresh clone (tests/unit/paths.hpp tells the story). This
reads the build's compile commands (ninja -t compdb) and names each offending define.

usage: check_clone_independent.py BUILD_DIR SOURCE_DIR [ALLOWED_SOURCE ...]
       check_clone_independent.py --compdb FILE BUILD_DIR SOURCE_DIR [ALLOWED_SOURCE ...]
ALLOWED_SOURCE: paths relative to SOURCE_DIR whose commands may hold such defines.
Exit 0 when clean, 1 naming each source and define otherwise, 2 on bad usage.
"""
import json
import os
import shlex
import subprocess
import sys

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".cu", ".hxx.cxx")

def compile_commands(build_dir, compdb_file):
    if compdb_file:
        with open(compdb_file, encoding="utf-8") as f:
            return json.load(f)
    out = subprocess.run(["ninja", "-C", build_dir, "-t", "compdb"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main(argv):
    compdb_file = None
    if argv[:1] == ["--compdb"]:
        if len(argv) < 2:
            print(__doc__, file=sys.stderr)
            return 2
        compdb_file, argv = argv[1], argv[2:]
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build_dir, source_dir = os.path.realpath(argv[0]), os.path.realpath(argv[1])
    allowed = {os.path.join(source_dir, a) for a in argv[2:]}
    roots = sorted({build_dir, source_dir}, key=len, reverse=True)
    problems, checked = [], 0
    for entry in compile_commands(build_dir, compdb_file):
        source = os.path.normpath(os.path.join(entry.get("directory", ""), entry["file"]))
        if source in allowed:
            continue
        args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
        if "-c" not in args or not source.endswith(SOURCE_SUFFIXES):
            continue  # a custom command (a cmake -P script, say), not a compile
        checked += 1
        for i, arg in enumerate(args):
            define = args[i + 1] if arg == "-D" and i + 1 < len(args) else arg[2:] if arg.startswith("-D") else None
            if define and any(root in define for root in roots):
                problems.append(f"{os.path.relpath(source, source_dir)}: -D{define}")
    if problems:
        print("compile definitions that name the checkout's directory (a fresh clone misses ccache):")
        for p in problems:
            print("  " + p)
        print("move such paths into one source of their own (see tests/unit/paths.hpp)")
        return 1
    print(f"{checked} compile commands, none with a define naming {' or '.join(roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
