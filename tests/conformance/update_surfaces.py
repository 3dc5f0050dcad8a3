r"""Write the name surfaces of NVIDIA's published TensorRT bindings and of pycuda, for the conformance tests.

    PYTHONPATH=$PWD python tests/conformance/update_surfaces.py            # newest 10.x and 11.x, newest pycuda
    PYTHONPATH=$PWD python tests/conformance/update_surfaces.py --tensorrt 10.16.1.11 --tensorrt 11.4.0.106

Network is used here only, through `pip download --no-deps` into a temporary folder (nothing is installed);
the tests read the JSON files this writes. TensorRT: `tensorrt-cu12-bindings` (10.x) / `tensorrt-cu13-bindings`
(11.x) wheels carry `tensorrt.so` without libnvinfer, so they cannot be imported here, but every name pybind11
binds (classes, methods, properties, enum members) is a NUL-terminated string in its .rodata section. The
linker stores a string inside the tail of a longer one ("Builder" lives in "IExprBuilder\0", "INT8" in
"UINT8\0"), so the file keeps the identifier strings (C++ type-info strings left out) with `"match": "tail"`:
a name is bound when it ends one of them. The names the package's `__init__.py` defines (`nptype`,
`__version__`) are added. pycuda ships as an sdist only: its surface (`"match": "exact"`) is the names its
Boost.Python wrapper binds (quoted names, DEF_SIMPLE_*(NAME), DECLARE_EXC(NAME)) plus what `pycuda/driver.py`
defines.

The surface is flat (one set of names per version): it catches a name that a version does not bind anywhere,
not a name bound on another class.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (package to download, pip requirement) per TensorRT major: cu12 wheels stop at 10.x for our purposes.
TENSORRT = {"10": ("tensorrt-cu12-bindings", ">=10,<11"), "11": ("tensorrt-cu13-bindings", ">=11,<12")}


# Itanium-mangled type names (typeid strings such as N8tensorrt20CalibratorTrampolineIN8nvinfer1...EEE).
MANGLED = re.compile(r"^(N|St)\d|\d(tensorrt|nvinfer|pybind|__cxx)|ES[a-z]I|EE$")


def elf_section(data: bytes, wanted: str) -> bytes:
    """One section of a 64-bit little-endian ELF file, read with struct (no binutils needed)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][4]
    for h in headers:
        if data[names + h[0]: data.index(b"\0", names + h[0])].decode() == wanted:
            return data[h[4]: h[4] + h[5]]
    raise ValueError(f"no {wanted} section")


def python_names(source: str) -> set[str]:
    """Names a Python module defines: functions, classes, assignments (also `Class.attr = ...`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in getattr(node, "targets", [getattr(node, "target", None)]):
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        found.add(sub.id)
                    elif isinstance(sub, ast.Attribute):
                        found.add(sub.attr)
    return found


def tensorrt_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        so = next(n for n in zf.namelist() if re.search(r"/tensorrt[^/]*\.so$", n))
        init = next(n for n in zf.namelist() if n.endswith("/__init__.py") and n.count("/") == 1)
        rodata = elf_section(zf.read(so), ".rodata")
        init_source = zf.read(init).decode()
    strings = {raw.decode() for raw in re.findall(rb"(?<=\0)[A-Za-z_][A-Za-z0-9_]*(?=\0)", rodata)}
    init_names = {n for n in python_names(init_source) if not n.startswith("_") or n.startswith("__")}
    return {s for s in strings if not MANGLED.search(s)} | init_names


def pycuda_names(sdist: Path) -> set[str]:
    names = set()
    with tarfile.open(sdist) as tf:
        for member in tf.getmembers():
            if re.search(r"/src/wrapper/[^/]+\.(cpp|hpp)$", member.name):
                text = tf.extractfile(member).read().decode(errors="replace")
                names |= set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', text))
                names |= set(re.findall(r"(?:DEF_SIMPLE_\w+|DECLARE_EXC)\(\s*(\w+)", text))
            elif member.name.endswith("/pycuda/driver.py") or member.name.endswith("/pycuda/__init__.py"):
                names |= python_names(tf.extractfile(member).read().decode())
    return names


def download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), requirement]
    # an sdist is only read: no build isolation, so pip does not build numpy & co. just to read its metadata
    cmd += ["--no-binary", ":all:", "--no-build-isolation"] if sdist else ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return max(dest.iterdir(), key=lambda p: p.stat().st_mtime)


def write_surface(kind: str, package: str, artifact: Path, names: set[str], match: str) -> Path:
    version = re.search(r"-(\d[\w.]*?)(?:-cp|-py|\.tar\.gz)", artifact.name).group(1)
    out = HERE / f"{kind}-{version}.json"
    payload = {"package": package, "version": version, "artifact": artifact.name,
               "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(), "match": match, "names": sorted(names)}
    out.write_text(json.dumps(payload, indent=0) + "\n")
    print(f"wrote {out.relative_to(HERE.parents[1])}: {len(names)} names from {artifact.name}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensorrt", action="append", default=None, metavar="VERSION",
                        help="exact versions (default: the newest 10.x and the newest 11.x)")
    parser.add_argument("--pycuda", default=None, metavar="VERSION", help="exact version (default: newest)")
    args = parser.parse_args(argv)
    requests = ([(TENSORRT[v.split(".")[0]][0], f"=={v}") for v in args.tensorrt] if args.tensorrt
                else list(TENSORRT.values()))
    for package, spec in requests:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download(package + spec, Path(tmp))
            write_surface("tensorrt", package, wheel, tensorrt_names(wheel), "tail")
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download("pycuda" + (f"=={args.pycuda}" if args.pycuda else ""), Path(tmp), sdist=True)
        write_surface("pycuda", "pycuda", sdist, pycuda_names(sdist), "exact")


if __name__ == "__main__":
    main()
