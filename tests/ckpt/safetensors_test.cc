// The torch-free safetensors code (cohort/ckpt/safetensors.h): a written file reads back
// byte for byte, every malformed layout is a CheckpointCorrupt naming the file and the
// problem (header length, JSON, dtype, shape vs bytes, offsets outside the file, overlap,
// holes, duplicates), the shard index, and the bfloat16 / float32 conversions (ties to even,
// NaN, float64 without double rounding, half subnormals).
#include "cohort/ckpt/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace cohort::ckpt {
namespace {

namespace fs = std::filesystem;

std::string tempDir() {
  const fs::path d = fs::temp_directory_path() / ("cohort-st-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d.string();
}

// A file of the 8-byte length, `header`, then `payload` bytes (the length may lie).
std::string rawFile(const std::string& name, const std::string& header, std::size_t payload,
                    std::int64_t lengthField = -1) {
  const std::string path = tempDir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = lengthField < 0 ? header.size() : static_cast<std::uint64_t>(lengthField);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header << std::string(payload, '\x07');
  return path;
}

std::string errorOf(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const CheckpointCorrupt& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsWriter, RoundTripBytesNamesMetadata) {
  const std::string path = tempDir() + "/rt.safetensors";
  const std::vector<float> a{1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, 7.0f};
  const std::vector<std::int64_t> b{-1, 1LL << 40};
  const std::vector<std::uint8_t> c{1, 0, 1};
  const std::vector<SafetensorsTensorSpec> specs{{"layer.0\"q\\", "float32", {2, 3}},
                                                 {"ids", "int64", {2}},
                                                 {"mask", "bool", {3}},
                                                 {"empty", "float16", {0, 4}},
                                                 {"scalar", "int8", {}}};
  const void* data[] = {a.data(), b.data(), c.data(), nullptr, "\x05"};
  const std::size_t bytes[] = {24, 16, 3, 0, 1};
  writeSafetensors(path, specs, {{"format", "pt"}, {"note", "\x01 tab\t"}},
                   [&](std::size_t i, void* dst) { std::memcpy(dst, data[i], bytes[i]); });
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& e = f.tensors()[i];
    EXPECT_EQ(e.name, specs[i].name);
    EXPECT_EQ(e.dtype, specs[i].dtype);
    EXPECT_EQ(e.shape, specs[i].shape);
    std::vector<char> got(static_cast<std::size_t>(e.bytes()));
    f.read(e, got.data());
    ASSERT_EQ(got.size(), bytes[i]);
    EXPECT_EQ(std::memcmp(got.data(), data[i], bytes[i]), 0) << e.name;
  }
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "\x01 tab\t");
  // The buffer starts 8-aligned (header padded).
  EXPECT_EQ(f.tensors()[0].begin % 8, 0);
}

TEST(SafetensorsReader, EveryMalformedLayoutNamesTheFileAndTheProblem) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(errorOf(rawFile("ok.st", ok, 8)), "");
  struct Case {
    const char* name;
    std::string header;
    std::size_t payload;
    std::int64_t lengthField;
    const char* needle;
  };
  const Case cases[] = {
      {"empty_header", "", 0, 0, "header of 0 bytes"},
      {"len_past_file", ok, 8, 1 << 20, "exceeds the file"},
      {"len_huge", ok, 8, (1LL << 40), "exceeds the limit"},
      {"not_json", "{\"a\": nope}", 0, -1, "bad JSON"},
      {"not_object", "[1, 2]   ", 0, -1, "does not start with '{'"},
      {"trailing_json", ok + "x", 8, -1, "unexpected bytes after"},
      {"dtype", R"({"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2, -1,
       "unsupported safetensors dtype 'F8'"},
      {"count", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, -1,
       "shape needs 12 bytes, data_offsets [0, 8] hold 8"},
      {"negative", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, -1,
       "not a non-negative integer"},
      {"past_end", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, -1,
       "past the end of the file"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, -1, "'a' and 'b' overlap"},
      {"hole",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, -1, "a hole"},
      {"trailing", ok, 12, -1, "4 bytes after the last tensor"},
      {"duplicate",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       2, -1, "listed twice"},
      {"end_before_begin", R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4, -1,
       "end < begin"},
      {"metadata",
       R"({"__metadata__":{"k":3},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1, -1,
       "is not a string"},
  };
  for (const Case& c : cases) {
    const std::string path =
        rawFile(std::string(c.name) + ".st", c.header, c.payload, c.lengthField);
    const std::string err = errorOf(path);
    EXPECT_NE(err.find(path), std::string::npos) << c.name << ": " << err;
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.name << ": " << err;
  }
  EXPECT_NE(errorOf(tempDir() + "/nonexistent.st").find("cannot open"), std::string::npos);
  const std::string tiny = tempDir() + "/tiny.st";
  std::ofstream(tiny) << "{}";
  EXPECT_NE(errorOf(tiny).find("too short"), std::string::npos) << errorOf(tiny);
}

TEST(SafetensorsIndex, WeightMapAndBadEntries) {
  const std::string dir = tempDir();
  auto writeText = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const auto m = readSafetensorsIndex(writeText(
      "i.json",
      R"({"metadata":{"total_size":12},"weight_map":{"a.w":"s1.st","b\u00e9":"s2.st"}})"));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.at("a.w"), "s1.st");
  EXPECT_EQ(m.at("b\xc3\xa9"), "s2.st");
  for (const char* bad : {R"({"metadata":{}})", R"({"weight_map":{"a":"../x.st"}})",
                          R"({"weight_map":{"a":1}})", R"({"weight_map":{"a":"x.st"})"}) {
    const std::string path = writeText("bad.json", bad);
    try {
      readSafetensorsIndex(path);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const CheckpointCorrupt& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

std::uint16_t bf16(float f) {
  std::uint16_t out;
  convertElements("float32", "bfloat16", &f, &out, 1);
  return out;
}
float floatOfBits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(SafetensorsConvert, Bfloat16RoundsToNearestEven) {
  EXPECT_EQ(bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16(floatOfBits(0x3f808000u)), 0x3f80);         // tie, even below
  EXPECT_EQ(bf16(floatOfBits(0x3f818000u)), 0x3f82);         // tie, even above
  EXPECT_EQ(bf16(floatOfBits(0x3f808001u)), 0x3f81);         // above the tie
  EXPECT_EQ(bf16(floatOfBits(0x3f807fffu)), 0x3f80);         // below the tie
  EXPECT_EQ(bf16(floatOfBits(0xbf818000u)), 0xbf82);         // negative tie
  EXPECT_EQ(bf16(floatOfBits(0x7f7fffffu)), 0x7f80);         // FLT_MAX overflows to inf
  EXPECT_EQ(bf16(floatOfBits(0x00018000u)), 0x0002);         // subnormal tie
  const std::uint16_t nan = bf16(floatOfBits(0x7f800001u));  // signalling NaN stays NaN
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
  // float64: 1 + 2^-8 + 2^-30 is just above the tie between 1 and 1 + 2^-7; rounding to
  // float32 first would make it the exact tie and round down to 1 (double rounding).
  const double d = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  std::uint16_t out;
  convertElements("float64", "bfloat16", &d, &out, 1);
  EXPECT_EQ(out, 0x3f81);
  const double tie = 1.0 + std::ldexp(1.0, -8);
  convertElements("float64", "bfloat16", &tie, &out, 1);
  EXPECT_EQ(out, 0x3f80);
}

TEST(SafetensorsConvert, Float32FromEveryFloatingType) {
  const std::uint16_t half[] = {0x3c00, 0x0001, 0x8400, 0x7c00, 0x7bff};
  float out[5];
  convertElements("float16", "float32", half, out, 5);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(out[2], -std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(out[3]));
  EXPECT_EQ(out[4], 65504.0f);
  const std::uint16_t b[] = {0x3fc0, 0xc000};
  convertElements("bfloat16", "float32", b, out, 2);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
  const double d[] = {0.1, 1e300};
  convertElements("float64", "float32", d, out, 2);
  EXPECT_EQ(out[0], 0.1f);
  EXPECT_TRUE(std::isinf(out[1]));
  const std::int64_t i = 3;
  std::int64_t j = 0;
  convertElements("int64", "int64", &i, &j, 1);
  EXPECT_EQ(j, 3);
  EXPECT_THROW(convertElements("int64", "float32", &i, out, 1), ConfigError);
}

}  // namespace
}  // namespace cohort::ckpt
