#!/usr/bin/env python3
"""Reads the model files of a fedrec run directory with the standard library.

    python3 scripts/read_model.py RUN_DIR [--holder central|site<s>]

prints the model's name, every block's shape, and the SHA-256 of the global
blocks, which equals "model_sha256" in RUN_DIR/summary.json.

Format (version 1) of model.global and <holder>/model.local:
    fedrec-model-blocks v1 <model> <blocks>\n
    then per block:  <name> <scope> <rows> <cols>\n  rows*cols little-endian float32  \n
The rows of per-item blocks follow RUN_DIR/items.tsv (one raw item ID per
line); the rows of a holder's user blocks follow <holder>/users.tsv.
"""
import array
import hashlib
import json
import sys
from pathlib import Path

MAGIC = b"fedrec-model-blocks"


def read_blocks(path):
    """Returns (model name, {block name: (rows, cols, array of float32)})."""
    blocks = {}
    with open(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 4 or header[0] != MAGIC or header[1] != b"v1":
            raise ValueError(f"{path}: expected 'fedrec-model-blocks v1 <model> <blocks>', "
                             f"found {b' '.join(header)[:80]!r}")
        for _ in range(int(header[3])):
            name, _scope, rows, cols = f.readline().split()
            values = array.array("f")
            values.frombytes(f.read(4 * int(rows) * int(cols)))
            if sys.byteorder == "big":
                values.byteswap()
            f.read(1)  # the newline after the values
            blocks[name.decode()] = (int(rows), int(cols), values)
    return header[2].decode(), blocks


def model_sha256(blocks):
    """SHA-256 over the blocks' little-endian float32 values, in file order."""
    sha = hashlib.sha256()
    for _rows, _cols, values in blocks.values():
        data = array.array("f", values)
        if sys.byteorder == "big":
            data.byteswap()
        sha.update(data.tobytes())
    return sha.hexdigest()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    run = Path(argv[1])
    holder = argv[argv.index("--holder") + 1] if "--holder" in argv else None
    model, blocks = read_blocks(run / "model.global")
    items = (run / "items.tsv").read_text().splitlines()
    print(f"model {model}: {len(items)} items")
    for name, (rows, cols, _) in blocks.items():
        print(f"  global {name}: {rows} x {cols}")
    sha = model_sha256(blocks)
    print(f"  sha256 {sha}")
    summary = run / "summary.json"
    if summary.exists():
        recorded = json.loads(summary.read_text()).get("model_sha256")
        print(f"  summary.json model_sha256 {'matches' if recorded == sha else 'DIFFERS'}")
        if recorded != sha:
            return 1
    if holder:
        _, local = read_blocks(run / holder / "model.local")
        users = (run / holder / "users.tsv").read_text().splitlines()
        print(f"{holder}: {len(users)} users")
        for name, (rows, cols, _) in local.items():
            print(f"  local {name}: {rows} x {cols}")
            if name.startswith("user_") and rows != len(users):
                print(f"  {name} has {rows} rows for {len(users)} users", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
