"""``python -m voxgate.relay.xdp build``: relay_xdp.o from relay_xdp.c (clang's BPF target, Debian's libbpf-dev
headers); ``check``: fail if the shipped object no longer matches what its source builds to (CI runs it)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from . import OBJECT, SOURCE


def compile_bpf(source: str, out: str) -> None:
    """An XDP program's C source to its object with clang's BPF target (Debian's libbpf-dev headers), compiled from
    its own directory with that directory mapped to ``.``, so the object does not name where it was built."""
    clang = shutil.which("clang")
    if clang is None:
        sys.exit("voxgate.relay.xdp: clang is needed to build an XDP program (Debian: clang libbpf-dev)")
    where = os.path.dirname(os.path.abspath(source))
    # asm/types.h lives under the multiarch directory; the object itself is the same on x86-64 and aarch64 (bpfel)
    arch = [d for d in glob.glob("/usr/include/*-linux-gnu") if os.path.exists(os.path.join(d, "asm", "types.h"))]
    cmd = [clang, "-O2", "-g", "-target", "bpfel", "-Wall", "-Werror", f"-fdebug-prefix-map={where}=.",
           *[f"-I{d}" for d in arch[:1]],
           "-c", os.path.basename(source), "-o", os.path.abspath(out)]
    subprocess.run(cmd, cwd=where, check=True)
    strip = shutil.which("llvm-strip") or shutil.which("llvm-strip-14")
    if strip:  # DWARF out (it names the build directory); BTF, which libbpf needs for the maps, stays
        subprocess.run([strip, "-g", out], check=True)


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "check"
    if what == "build":
        compile_bpf(SOURCE, OBJECT)
        print(f"built {OBJECT}")
        return 0
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "relay_xdp.o")
        compile_bpf(SOURCE, out)
        with open(out, "rb") as a, open(OBJECT, "rb") as b:
            if a.read() != b.read():
                print(f"{OBJECT} does not match relay_xdp.c: run python -m voxgate.relay.xdp build", file=sys.stderr)
                return 1
    print("relay_xdp.o matches its source")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
