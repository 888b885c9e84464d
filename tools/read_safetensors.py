#!/usr/bin/python3
"""tools/read_safetensors.py — reads a .safetensors file with nothing but the format spec and
numpy (an independent check of Tessera's writer; the `safetensors` package is not in Debian 12).

usage: tools/read_safetensors.py FILE   prints one line per tensor: name dtype shape sum
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = body[begin:end]
        if info["dtype"] == "BF16":  # widen bf16 to fp32 by shifting the bits
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        arr = arr.reshape(info["shape"])
        print(f"{name} {info['dtype']} {list(arr.shape)} {float(arr.astype(np.float64).sum()):.6g}")


if __name__ == "__main__":
    main(sys.argv[1])
