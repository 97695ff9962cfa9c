#!/usr/bin/python3
"""Reads Cohort checkpoints using only the rules of docs/checkpoint-format.md.

Nothing here comes from Cohort's code: manifest.pb is decoded with a minimal protobuf wire
decoder and manifest.txtpb with a tiny text-format parser (both driven by the field numbers
and names the document lists, no google.protobuf), shards are read with h5py, CRC32C is a
pure-Python table implementation. Needs python3-h5py and python3-numpy.

Usage:
  independent_reader.py CKPT_DIR --expected DIR    read every tensor, compare with the raw
                                                   files listed in DIR/index.tsv
  independent_reader.py CKPT_DIR --tensor NAME     print one tensor
  independent_reader.py --export FILE.h5 --expected DIR [--prefix model/]
                                                   check a `cohort ckpt export` file
Exit status: 0 OK, 1 mismatch or corrupt checkpoint (the message names the file), 2 usage.
"""

import os
import re
import sys

import h5py
import numpy as np

# ---------------------------------------------------------------------------------------
# CRC32C (Castagnoli), reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283

# ---------------------------------------------------------------------------------------
# The manifest schema (ckpt/proto/manifest.proto as the document lists it):
# field number -> (name, kind, repeated). kind is a scalar kind or a nested schema dict.

CHUNK = {1: ("shard", "uint", False), 2: ("dataset", "string", False),
         3: ("offset", "int", False), 4: ("count", "int", False),
         5: ("crc32c", "fixed32", True)}
TENSOR = {1: ("name", "string", False), 2: ("dtype", "string", False),
          3: ("shape", "int", True), 4: ("chunks", CHUNK, True)}
MAP_ENTRY = {1: ("key", "string", False), 2: ("value", "double", False)}
LOG = {1: ("step", "int", False), 2: ("epoch", "double", False),
       3: ("values", MAP_ENTRY, True)}
STATE = {1: ("global_step", "int", False), 2: ("epoch", "double", False),
         3: ("consumed_samples", "int", False), 4: ("epoch_index", "int", False),
         5: ("step_in_epoch", "int", False), 6: ("global_batch", "int", False),
         7: ("max_steps", "int", False), 8: ("best_metric", "double", False),
         9: ("best_model_checkpoint", "string", False), 10: ("log_history", LOG, True),
         11: ("optimizer_step", "int", False), 12: ("optimizer", "string", False),
         13: ("lr_scheduler_type", "string", False), 14: ("last_learning_rate", "double", False),
         15: ("data_seed", "uint", False), 16: ("preempted", "bool", False),
         17: ("best_global_step", "int", False)}
MANIFEST = {1: ("format_version", "uint", False), 2: ("created_by", "string", False),
            3: ("world_size", "int", False), 4: ("shards", "string", True),
            5: ("checksum_block_bytes", "int", False), 6: ("tensors", TENSOR, True),
            7: ("trainer_state", STATE, False), 8: ("training_args", "string", False),
            9: ("total_bytes", "int", False), 10: ("save_seconds", "double", False),
            11: ("shard_bytes", "int", True), 12: ("shard_crc32c", "fixed32", True),
            15: ("manifest_crc32c", "fixed32", False)}


class Corrupt(Exception):
    pass


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _scalar(kind, wire, raw):
    """One scalar from its wire form (varint int, 8 or 4 raw bytes, or length-delimited)."""
    if kind == "uint":
        return raw
    if kind == "int":  # int32/int64: two's complement in 64 bits
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if kind == "bool":
        return raw != 0
    if kind == "double":
        return float(np.frombuffer(raw, "<f8")[0])
    if kind == "fixed32":
        return int.from_bytes(raw, "little")
    if kind == "string":
        return raw.decode("utf-8")
    raise Corrupt("bad kind " + kind)


def decode(buf, schema):
    """Decodes one message; unknown fields are skipped as the protobuf rules say."""
    out = {}
    pos = 0
    buf = bytes(buf)
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            raw, pos = _varint(buf, pos)
        elif wire == 1:
            raw, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            raw, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            raw, pos = buf[pos:pos + 4], pos + 4
        else:
            raise Corrupt("unsupported wire type %d" % wire)
        if pos > len(buf):
            raise Corrupt("truncated field %d" % num)
        if num not in schema:
            continue
        name, kind, repeated = schema[num]
        if isinstance(kind, dict):
            values = [decode(raw, kind)]
        elif wire == 2 and kind not in ("string",):  # a packed run of scalars
            values, p = [], 0
            while p < len(raw):
                if kind == "fixed32":
                    values.append(_scalar(kind, 5, raw[p:p + 4]))
                    p += 4
                elif kind == "double":
                    values.append(_scalar(kind, 1, raw[p:p + 8]))
                    p += 8
                else:
                    v, p = _varint(raw, p)
                    values.append(_scalar(kind, 0, v))
        else:
            values = [_scalar(kind, wire, raw)]
        if repeated:
            out.setdefault(name, []).extend(values)
        else:
            out[name] = values[-1]
    return out


# ---------------------------------------------------------------------------------------
# Protobuf text format (manifest.txtpb): `name: value` and `name { ... }`, repeated fields
# repeat the line. Enough for what the manifest holds.

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}\[\]:<>,;]|[^\s{}\[\]:<>,;"\']+')


def _unescape(s):
    out, i = bytearray(), 0
    simple = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39,
              '"': 34, "?": 63}
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        e = s[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in "01234567":
            j = i + 1
            while j < len(s) and j < i + 4 and s[j] in "01234567":
                j += 1
            out.append(int(s[i + 1:j], 8) & 0xFF)
            i = j
        elif e == "x":
            j = i + 2
            while j < len(s) and j < i + 4 and s[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(s[i + 2:j], 16))
            i = j
        else:
            raise Corrupt("bad escape \\" + e)
    return bytes(out)


def parse_text(text, schema):
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    pos = 0

    def message(schema, end):
        nonlocal pos
        by_name = {v[0]: v for v in schema.values()}
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if name not in by_name:  # a newer writer's field: skip its value
                if tokens[pos] == ":":
                    pos += 1
                if tokens[pos] in ("{", "<"):
                    depth = 0
                    while True:
                        depth += tokens[pos] in ("{", "<")
                        depth -= tokens[pos] in ("}", ">")
                        pos += 1
                        if depth == 0:
                            break
                else:
                    pos += 1
                    while pos < len(tokens) and tokens[pos][0] in "\"'":
                        pos += 1
                continue
            _, kind, repeated = by_name[name]
            if tokens[pos] == ":":
                pos += 1
            if isinstance(kind, dict):
                close = {"{": "}", "<": ">"}[tokens[pos]]
                pos += 1
                value = message(kind, close)
                pos += 1
            else:
                tok = tokens[pos]
                pos += 1
                if tok[0] in "\"'":
                    raw = _unescape(tok[1:-1])
                    while pos < len(tokens) and tokens[pos][0] in "\"'":  # "a" "b" concatenate
                        raw += _unescape(tokens[pos][1:-1])
                        pos += 1
                    value = raw.decode("utf-8")
                elif kind == "double":
                    value = float(tok.lower().rstrip("f") if "inf" not in tok.lower() else tok)
                elif kind == "bool":
                    value = tok in ("true", "True", "t", "1")
                else:
                    value = int(tok, 0)
            if repeated:
                out.setdefault(name, []).append(value)
            else:
                out[name] = value
            if pos < len(tokens) and tokens[pos] in (",", ";"):
                pos += 1
        return out

    result = message(schema, None)
    return result


# ---------------------------------------------------------------------------------------
# Tensors

# dtype name -> (numpy dtype of the stored HDF5 data, bytes per element)
STORED = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<u2",
          "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1",
          "bool": "u1"}


def typed(raw, dtype, shape):
    """Raw little-endian bytes -> a numpy array of the tensor's values (bfloat16 -> float32)."""
    a = np.frombuffer(raw, STORED[dtype]).reshape(shape)
    if dtype == "bfloat16":
        return (a.astype("<u4") << 16).view("<f4")
    if dtype == "bool":
        return a != 0
    return a


def load_manifest(ckpt):
    if os.path.exists(os.path.join(ckpt, "checkpoint-is-incomplete.txt")):
        raise Corrupt(ckpt + " is incomplete (checkpoint-is-incomplete.txt present)")
    path = os.path.join(ckpt, "manifest.pb")
    if not os.path.exists(path):
        raise Corrupt(ckpt + " is incomplete (no manifest.pb)")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x08\x02":
        # Version 2: the last 5 bytes are field 15 (tag 0x7D), the CRC32C of all before it.
        if len(raw) < 7 or raw[-5] != 0x7D:
            raise Corrupt(path + ": version 2 manifest without its checksum")
        if crc32c(raw[:-5]) != int.from_bytes(raw[-4:], "little"):
            raise Corrupt(path + ": manifest checksum mismatch")
        m = decode(raw, MANIFEST)
        if m.get("format_version") != 2:
            raise Corrupt(path + ": malformed version 2 manifest")
    else:
        m = decode(raw, MANIFEST)
        if m.get("format_version") != 1 or "manifest_crc32c" in m:
            raise Corrupt(path + ": unsupported format_version %r" % m.get("format_version"))
    world = m.get("world_size", 0)
    if world <= 0 or len(m.get("shards", [])) != world:
        raise Corrupt(path + ": world_size and shards disagree")
    for i, name in enumerate(m["shards"]):
        if name != "shard-%05d-of-%05d.h5" % (i, world):
            raise Corrupt(path + ": shard %d has the name %r" % (i, name))
    if m["format_version"] == 2:
        if len(m.get("shard_bytes", [])) != world or len(m.get("shard_crc32c", [])) != world:
            raise Corrupt(path + ": shard sizes or checksums missing")
    return m


def check_shard_files(ckpt, m):
    """Version 2: every shard file has the recorded size and CRC32C (all of its bytes)."""
    if m["format_version"] < 2:
        return
    for name, size, want in zip(m["shards"], m["shard_bytes"], m["shard_crc32c"]):
        path = os.path.join(ckpt, name)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != size:
            raise Corrupt("shard %s has %d bytes, the manifest %d" % (path, len(data), size))
        if crc32c(data) != want:
            raise Corrupt("shard %s: checksum of the whole file differs" % path)


def chunk_defaults(c):
    return {"shard": c.get("shard", 0), "dataset": c.get("dataset", ""),
            "offset": c.get("offset", 0), "count": c.get("count", 0),
            "crc32c": c.get("crc32c", [])}


def read_tensor(ckpt, manifest, entry, files):
    """Reassembles one tensor: chunks sorted by offset, CRC32C per block, reshape row-major."""
    name, dtype = entry["name"], entry["dtype"]
    shape = tuple(entry.get("shape", []))
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    stored = np.dtype(STORED[dtype])
    block = manifest["checksum_block_bytes"]
    parts, next_offset = [], 0
    for c in sorted((chunk_defaults(c) for c in entry.get("chunks", [])),
                    key=lambda c: c["offset"]):
        shard = os.path.join(ckpt, manifest["shards"][c["shard"]])
        if c["offset"] != next_offset:
            raise Corrupt("%s: chunks of %s do not tile it" % (ckpt, name))
        if shard not in files:
            if not os.path.exists(shard):
                raise Corrupt("shard %s is missing" % shard)
            try:
                files[shard] = h5py.File(shard, "r")
            except OSError as e:
                raise Corrupt("cannot open shard %s: %s" % (shard, e))
        try:
            d = files[shard][c["dataset"]]
        except KeyError:
            raise Corrupt("%s: no dataset %s" % (shard, c["dataset"]))
        if d.shape != (c["count"],) or d.dtype != stored:
            raise Corrupt("%s %s: shape or datatype differs from the manifest"
                          % (shard, c["dataset"]))
        attrs = {k: d.attrs[k] for k in ("tensor", "dtype", "offset")}
        for k in ("tensor", "dtype"):
            if isinstance(attrs[k], bytes):
                attrs[k] = attrs[k].decode()
        if (attrs["tensor"], attrs["dtype"], int(np.ravel(attrs["offset"])[0])) != (
                name, dtype, c["offset"]):
            raise Corrupt("%s %s: attributes %r disagree with the manifest"
                          % (shard, c["dataset"], attrs))
        data = np.empty(c["count"], stored)
        if c["count"] > 0:
            try:
                d.read_direct(data)
            except OSError as e:
                raise Corrupt("%s %s: read failed: %s" % (shard, c["dataset"], e))
        raw = data.tobytes()
        blocks = [raw[i:i + block] for i in range(0, len(raw), block)]
        if len(blocks) != len(c["crc32c"]):
            raise Corrupt("%s %s: %d checksums for %d blocks"
                          % (shard, c["dataset"], len(c["crc32c"]), len(blocks)))
        for k, (b, want) in enumerate(zip(blocks, c["crc32c"])):
            if crc32c(b) != want:
                raise Corrupt("%s %s: checksum mismatch in block %d" % (shard, c["dataset"], k))
        parts.append(raw)
        next_offset += c["count"]
    if next_offset != numel:
        raise Corrupt("%s: chunks of %s cover %d of %d elements" % (ckpt, name, next_offset, numel))
    raw = b"".join(parts)
    return raw, typed(raw, dtype, shape)


def comparable(entry):
    return (entry["name"], entry["dtype"], list(entry.get("shape", [])),
            [chunk_defaults(c) for c in entry.get("chunks", [])])


def read_expected(expected_dir):
    out = []
    with open(os.path.join(expected_dir, "index.tsv")) as f:
        for line in f:
            name, dtype, shape, file = line.rstrip("\n").split("\t")
            shape = tuple(int(x) for x in shape.split(",")) if shape else ()
            with open(os.path.join(expected_dir, file), "rb") as g:
                out.append((name, dtype, shape, g.read()))
    return out


def check_checkpoint(ckpt, expected_dir):
    m = load_manifest(ckpt)
    with open(os.path.join(ckpt, "manifest.txtpb")) as f:
        text = parse_text(f.read(), MANIFEST)
    if [comparable(t) for t in m["tensors"]] != [comparable(t) for t in text["tensors"]]:
        raise Corrupt("manifest.txtpb and manifest.pb list different tensors")
    for key in ("world_size", "shards", "shard_bytes", "shard_crc32c", "checksum_block_bytes", "training_args",
                "trainer_state"):
        if m.get(key) != text.get(key):
            raise Corrupt("manifest.txtpb and manifest.pb differ in %s" % key)
    if m["world_size"] != len(m["shards"]):
        raise Corrupt("world_size and shards disagree")
    by_name = {t["name"]: t for t in m["tensors"]}
    files = {}
    checked = 0
    for name, dtype, shape, want in read_expected(expected_dir):
        if name not in by_name:
            raise Corrupt("tensor %s missing from the manifest" % name)
        e = by_name[name]
        if e["dtype"] != dtype or tuple(e.get("shape", [])) != shape:
            raise Corrupt("tensor %s: dtype/shape %s %s, expected %s %s"
                          % (name, e["dtype"], e.get("shape"), dtype, shape))
        raw, values = read_tensor(ckpt, m, e, files)
        if raw != want:
            raise Corrupt("tensor %s: bytes differ from the expected values" % name)
        if not np.array_equal(values, typed(want, dtype, shape)):
            raise Corrupt("tensor %s: values differ" % name)
        if dtype == "bfloat16" and not np.all(np.isfinite(values)):
            raise Corrupt("tensor %s: bfloat16 decoding gave non-finite values" % name)
        checked += 1
    if checked != len(m["tensors"]):
        raise Corrupt("checked %d tensors, the manifest lists %d" % (checked, len(m["tensors"])))
    check_shard_files(ckpt, m)
    st = m.get("trainer_state", {})
    print("OK %s: %d tensors in %d shards match (global_step %d)"
          % (ckpt, checked, len(m["shards"]), st.get("global_step", 0)))


def check_export(path, expected_dir, prefix):
    checked = 0
    with h5py.File(path, "r") as f:
        for name, dtype, shape, want in read_expected(expected_dir):
            if not name.startswith(prefix):
                continue
            key = "/" + name[len(prefix):]
            if key not in f:
                raise Corrupt("%s: no dataset %s" % (path, key))
            d = f[key]
            if d.shape != shape:
                raise Corrupt("%s %s: shape %s, expected %s" % (path, key, d.shape, shape))
            a = np.empty(shape, STORED[dtype])
            if a.size:
                d.read_direct(a)
            if a.tobytes() != want:
                raise Corrupt("%s %s: values differ" % (path, key))
            attr = d.attrs.get("dtype")
            attr = attr.decode() if isinstance(attr, bytes) else attr
            if attr != dtype:
                raise Corrupt("%s %s: dtype attribute %r, expected %s" % (path, key, attr, dtype))
            checked += 1
    if checked == 0:
        raise Corrupt("%s: no tensor with prefix %s" % (path, prefix))
    print("OK %s: %d tensors match" % (path, checked))


def main(argv):
    args = argv[1:]
    opts = {}
    positional = []
    i = 0
    while i < len(args):
        if args[i] in ("--expected", "--tensor", "--export", "--prefix"):
            if i + 1 >= len(args):
                print("independent_reader: %s needs a value" % args[i], file=sys.stderr)
                return 2
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            positional.append(args[i])
            i += 1
    try:
        if "--export" in opts and "--expected" in opts:
            check_export(opts["--export"], opts["--expected"], opts.get("--prefix", "model/"))
        elif len(positional) == 1 and "--expected" in opts:
            check_checkpoint(positional[0], opts["--expected"])
        elif len(positional) == 1 and "--tensor" in opts:
            m = load_manifest(positional[0])
            e = [t for t in m["tensors"] if t["name"] == opts["--tensor"]]
            if not e:
                print("independent_reader: no tensor " + opts["--tensor"], file=sys.stderr)
                return 1
            _, values = read_tensor(positional[0], m, e[0], {})
            print(e[0]["name"], e[0]["dtype"], values.shape)
            print(values)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Corrupt, OSError) as e:
        print("independent_reader: " + str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
