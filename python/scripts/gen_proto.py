"""Regenerates stoker/_proto from ../proto/stoker/v1/stoker.proto.

    python scripts/gen_proto.py          # write the stubs
    python scripts/gen_proto.py --check  # exit 1 if they are stale

The stubs are checked in, so `pip install ./python` needs no protoc; the
test suite runs --check so they cannot drift from the contract.
"""

import pathlib
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = HERE.parent / "proto"
OUT = HERE / "stoker" / "_proto"


def generate(dest: pathlib.Path) -> dict:
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={dest}",
        f"--pyi_out={dest}",
        f"--grpc_python_out={dest}",
        str(PROTO_ROOT / "stoker" / "v1" / "stoker.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = {}
    for name in ["stoker_pb2.py", "stoker_pb2.pyi", "stoker_pb2_grpc.py"]:
        text = (dest / "stoker" / "v1" / name).read_text()
        # Our package is also called `stoker`: import the sibling module.
        text = text.replace("from stoker.v1 import stoker_pb2", "from . import stoker_pb2")
        files[name] = text
    return files


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(pathlib.Path(tmp))
    if "--check" in sys.argv:
        stale = [n for n, t in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != t]
        if stale:
            print(f"stale generated stubs: {stale}; run python/scripts/gen_proto.py", file=sys.stderr)
            return 1
        return 0
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
