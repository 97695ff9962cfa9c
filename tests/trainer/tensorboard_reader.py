#!/usr/bin/python3
"""An independent reader of TensorBoard event files, for the TensorBoard writer's tests.

Written from the formats alone (TFRecord framing with masked CRC32C; the protobuf wire
format; TensorFlow's and TensorBoard's field numbers), without protobuf or the project's
.proto, so that a mistake in the writer's schema shows up here instead of being shared.
Any unexpected field number or wire type, a bad CRC or trailing bytes is an error (exit 1).

Prints one line per thing found (strings hex-encoded, so spaces and newlines survive):
  version <wall_time> <file_version>
  scalar <step> <tag> <value>
  text <step> <tag> <plugin_name> <hex(text)>
  hparams <step> <tag> <plugin_name> <version> <start_time_secs>
  hparam <name> number|string|bool <value, strings as hex>
"""
import struct
import sys

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


def crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def masked_crc(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(blob):
    pos, n = 0, 0
    while pos < len(blob):
        if pos + 12 > len(blob):
            raise ValueError("record %d: truncated header" % n)
        (length,) = struct.unpack_from("<Q", blob, pos)
        (length_crc,) = struct.unpack_from("<I", blob, pos + 8)
        if masked_crc(blob[pos:pos + 8]) != length_crc:
            raise ValueError("record %d: length CRC mismatch" % n)
        data = blob[pos + 12:pos + 12 + length]
        if len(data) != length or pos + 16 + length > len(blob):
            raise ValueError("record %d: truncated data" % n)
        (data_crc,) = struct.unpack_from("<I", blob, pos + 12 + length)
        if masked_crc(data) != data_crc:
            raise ValueError("record %d: data CRC mismatch" % n)
        yield data
        pos += 16 + length
        n += 1


def varint(buf, pos):
    shift, value = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(buf, schema, what):
    """Yields (name, value) for each field of `buf`; `schema` maps number -> (name, wire)."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise ValueError("%s: unexpected field %d (wire type %d)" % (what, number, wire))
        name, want = schema[number]
        if wire != want:
            raise ValueError("%s.%s: wire type %d, expected %d" % (what, name, wire, want))
        if wire == VARINT:
            value, pos = varint(buf, pos)
        elif wire == FIXED64:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == FIXED32:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            length, pos = varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        if pos > len(buf):
            raise ValueError("%s.%s: runs past the end" % (what, name))
        yield name, value


def message(buf, schema, what):
    out = {}
    for name, value in fields(buf, schema, what):
        out.setdefault(name, []).append(value)
    return out


def one(msg, name, default=None):
    values = msg.get(name, [])
    return values[-1] if values else default


def as_double(raw):
    return struct.unpack("<d", raw)[0]


def as_float(raw):
    return struct.unpack("<f", raw)[0]


def as_int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


# TensorFlow event.proto / summary.proto / tensor.proto / tensor_shape.proto numbers.
EVENT = {1: ("wall_time", FIXED64), 2: ("step", VARINT), 3: ("file_version", BYTES),
         5: ("summary", BYTES)}
SUMMARY = {1: ("value", BYTES)}
VALUE = {1: ("tag", BYTES), 2: ("simple_value", FIXED32), 8: ("tensor", BYTES),
         9: ("metadata", BYTES)}
METADATA = {1: ("plugin_data", BYTES), 4: ("data_class", VARINT)}
PLUGIN_DATA = {1: ("plugin_name", BYTES), 2: ("content", BYTES)}
TENSOR = {1: ("dtype", VARINT), 2: ("tensor_shape", BYTES), 8: ("string_val", BYTES)}
SHAPE = {2: ("dim", BYTES)}
DT_STRING = 7
DATA_CLASS_TENSOR = 2
# TensorBoard's plugins/text/plugin_data.proto and plugins/hparams/plugin_data.proto,
# protobuf's struct.proto (google.protobuf.Value).
TEXT_PLUGIN = {1: ("version", VARINT)}
HPARAMS_PLUGIN = {1: ("version", VARINT), 3: ("session_start_info", BYTES)}
SESSION_START = {1: ("hparams", BYTES), 4: ("group_name", BYTES),
                 5: ("start_time_secs", FIXED64)}
MAP_ENTRY = {1: ("key", BYTES), 2: ("value", BYTES)}
STRUCT_VALUE = {2: ("number_value", FIXED64), 3: ("string_value", BYTES),
                4: ("bool_value", VARINT)}


def hparam_line(entry):
    e = message(entry, MAP_ENTRY, "hparams entry")
    name = one(e, "key", b"").decode()
    v = message(one(e, "value", b""), STRUCT_VALUE, "Value " + name)
    if "number_value" in v:
        return "hparam %s number %r" % (name, as_double(one(v, "number_value")))
    if "string_value" in v:
        return "hparam %s string %s" % (name, one(v, "string_value").hex())
    if "bool_value" in v:
        return "hparam %s bool %d" % (name, one(v, "bool_value"))
    raise ValueError("hparam %s has no value" % name)


def plugin_value(step, tag, value, metadata, out):
    plugin = message(one(metadata, "plugin_data", b""), PLUGIN_DATA, tag + " plugin_data")
    name = one(plugin, "plugin_name", b"").decode()
    content = one(plugin, "content", b"")
    if name == "text":
        message(content, TEXT_PLUGIN, tag + " TextPluginData")
        if one(metadata, "data_class", 0) != DATA_CLASS_TENSOR:
            raise ValueError(tag + ": text without data_class TENSOR")
        tensor = message(one(value, "tensor", b""), TENSOR, tag + " tensor")
        if one(tensor, "dtype") != DT_STRING:
            raise ValueError(tag + ": text tensor is not DT_STRING")
        if message(one(tensor, "tensor_shape", b""), SHAPE, tag + " shape").get("dim"):
            raise ValueError(tag + ": text tensor is not a scalar")
        strings = tensor.get("string_val", [])
        if len(strings) != 1:
            raise ValueError(tag + ": %d strings" % len(strings))
        out.append("text %d %s %s %s" % (step, tag, name, strings[0].hex()))
    elif name == "hparams":
        data = message(content, HPARAMS_PLUGIN, tag + " HParamsPluginData")
        info = message(one(data, "session_start_info", b""), SESSION_START, "SessionStartInfo")
        start = as_double(one(info, "start_time_secs", b"\0" * 8))
        out.append("hparams %d %s %s %d %r" % (step, tag, name, one(data, "version", 0), start))
        out.extend(hparam_line(entry) for entry in info.get("hparams", []))
    else:
        raise ValueError("%s: unknown plugin %r" % (tag, name))


def describe(blob):
    out = []
    for data in records(blob):
        event = message(data, EVENT, "Event")
        step = as_int64(one(event, "step", 0))
        if "file_version" in event:
            wall = as_double(one(event, "wall_time"))
            out.append("version %r %s" % (wall, one(event, "file_version").decode()))
            continue
        summary = message(one(event, "summary", b""), SUMMARY, "Summary")
        for raw in summary.get("value", []):
            value = message(raw, VALUE, "Summary.Value")
            tag = one(value, "tag", b"").decode()
            if "metadata" in value:
                metadata = message(one(value, "metadata"), METADATA, tag + " metadata")
                plugin_value(step, tag, value, metadata, out)
            else:
                out.append("scalar %d %s %r" % (step, tag, as_float(one(value, "simple_value"))))
    return out


def main():
    with open(sys.argv[1], "rb") as f:
        blob = f.read()
    try:
        lines = describe(blob)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        print("error: %s" % e)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
