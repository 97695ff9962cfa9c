#!/usr/bin/python3
"""An independent safetensors reader and writer for the tests, written from the published
format alone (docs/checkpoint-format.md): 8-byte little-endian header length N, N bytes of
JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the
byte buffer. numpy (and h5py for the HDF5 comparisons) only; no safetensors package.

Commands (exit 0 = pass, 1 = mismatch, with the reason on stdout):
  write-init DIR            init.safetensors (the weights_probe model, float32), bad.safetensors
                            (one name missing, one unexpected, one shape mismatched) and
                            renamed.safetensors (every name prefixed "model.")
  same A B                  the two files hold the same names, dtypes, shapes and bytes
  differ A B                same names, but some tensor's bytes differ
  equals-h5 ST H5 MODE      every dataset of the HDF5 export equals the safetensors tensor of
                            the same name bit for bit, after MODE's conversion (keep, float32,
                            bf16: round to nearest-even computed here with numpy)
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
          "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}
OURS = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
        "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
        "bool": "BOOL"}


def read(path):
    """{name: (dtype, shape, raw bytes)}, checking the layout rules on the way."""
    data = open(path, "rb").read()
    assert len(data) >= 8, f"{path}: shorter than 8 bytes"
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), f"{path}: header length {n} past the end"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            assert all(isinstance(v, str) for v in e.values()), "metadata values must be strings"
            continue
        b, end = e["data_offsets"]
        count = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        assert end - b == count * np.dtype(DTYPES[e["dtype"]]).itemsize, f"{name}: byte count"
        spans.append((b, end))
        out[name] = (e["dtype"], list(e["shape"]), data[base + b:base + end])
    pos = 0
    for b, end in sorted(spans):
        assert b == pos, f"{path}: hole or overlap at buffer byte {pos}"
        pos = end
    assert base + pos == len(data), f"{path}: trailing bytes"
    return out


def write(path, tensors, metadata=None):
    """tensors: list of (name, numpy array, safetensors dtype)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr, dt in tensors:
        raw = np.ascontiguousarray(arr).astype(DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def probe_model(rng):
    return [("fc1.weight", rng.standard_normal((8, 6)).astype(np.float32), "F32"),
            ("fc1.bias", rng.standard_normal(8).astype(np.float32), "F32"),
            ("fc2.weight", rng.standard_normal((3, 8)).astype(np.float32), "F32"),
            ("fc2.bias", rng.standard_normal(3).astype(np.float32), "F32"),
            ("scale", np.array([1.5, 0.5, 2.0], dtype=np.float32), "F32")]


def write_init(d):
    rng = np.random.default_rng(17)
    model = probe_model(rng)
    write(f"{d}/init.safetensors", model, {"format": "pt"})
    bad = [t for t in model if t[0] != "fc2.bias"]  # missing
    bad = [(n, a[:, :5].copy(), dt) if n == "fc1.weight" else (n, a, dt) for n, a, dt in bad]
    bad.append(("extra.weight", np.ones((2, 2), np.float32), "F32"))  # unexpected
    write(f"{d}/bad.safetensors", bad)
    write(f"{d}/renamed.safetensors", [("model." + n, a, dt) for n, a, dt in model])


def bf16_of_f32(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def bf16_value(b):
    return float(np.array([int(b) << 16], dtype=np.uint32).view(np.float32)[0])


def bf16_of_f64(a):
    """Correctly rounded float64 -> bfloat16 by comparing the neighbouring candidates."""
    out = []
    for x in np.asarray(a, dtype=np.float64).reshape(-1):
        x = float(x)
        if np.isnan(x):
            out.append(0x7FC0)
            continue
        t = int(np.array([x], np.float32).view(np.uint32)[0]) >> 16
        best = None
        for c in {max(t - 1, 0) if t & 0x7FFF else t, t, t + 1}:
            if (c & 0x8000) != (t & 0x8000):
                continue
            v = bf16_value(c)
            d = abs(x - v)
            key = (d, c & 1)
            if best is None or key < best[0]:
                best = (key, c)
        out.append(best[1])
    return np.array(out, dtype=np.uint16).reshape(np.shape(a))


def expected(arr, dtype, mode):
    """(safetensors dtype, bytes) of an HDF5 export dataset after MODE."""
    floating = dtype in ("float64", "float32", "float16", "bfloat16")
    if mode == "keep" or not floating:
        return OURS[dtype], np.ascontiguousarray(arr).astype(DTYPES[OURS[dtype]]).tobytes()
    if dtype == "bfloat16":
        f32 = (np.asarray(arr, np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        f32 = None
    if mode == "float32":
        v = f32 if f32 is not None else np.asarray(arr).astype(np.float32)
        return "F32", np.ascontiguousarray(v, dtype="<f4").tobytes()
    if dtype == "float64":
        return "BF16", bf16_of_f64(arr).astype("<u2").tobytes()
    if dtype == "bfloat16":
        return "BF16", np.asarray(arr, np.uint16).astype("<u2").tobytes()
    return "BF16", bf16_of_f32(np.asarray(arr).astype(np.float32)).astype("<u2").tobytes()


def equals_h5(st_path, h5_path, mode):
    import h5py
    st = read(st_path)
    names, bad = set(), []
    with h5py.File(h5_path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            names.add(name)
            dtype = obj.attrs["dtype"]
            dtype = dtype.decode() if isinstance(dtype, bytes) else str(dtype)
            want_dt, want = expected(obj[()], dtype, mode)
            if name not in st:
                bad.append(f"{name}: not in {st_path}")
                return
            dt, shape, raw = st[name]
            if dt != want_dt or shape != list(obj.shape) or raw != want:
                bad.append(f"{name}: safetensors {dt} {shape}, expected {want_dt} {list(obj.shape)}"
                           f" ({'bytes differ' if raw != want else 'bytes equal'})")
        f.visititems(visit)
    extra = set(st) - names
    if extra:
        bad.append(f"tensors only in {st_path}: {sorted(extra)}")
    if bad:
        print("MISMATCH\n  " + "\n  ".join(bad))
        return 1
    print(f"equal: {len(names)} tensors, mode {mode}")
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "write-init":
        write_init(argv[2])
        return 0
    if cmd in ("same", "differ"):
        a, b = read(argv[2]), read(argv[3])
        if sorted(a) != sorted(b):
            print(f"names differ: {sorted(a)} vs {sorted(b)}")
            return 1
        diff = [n for n in a if a[n] != b[n]]
        if (cmd == "same") != (not diff):
            print(f"{cmd}: differing tensors {diff}")
            return 1
        print(f"{cmd}: ok ({len(a)} tensors, {len(diff)} differ)")
        return 0
    if cmd == "equals-h5":
        return equals_h5(argv[2], argv[3], argv[4])
    print(f"unknown command {cmd}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
