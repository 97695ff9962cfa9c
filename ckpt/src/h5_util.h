// HDF5 plumbing shared by the shard writer, the reader and the exporter: one lock (Debian's
// parallel HDF5 is not built thread-safe, and an async save writes from a background
// thread), error strings from HDF5's own error stack, RAII ids, dtype <-> HDF5 type.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <string>

namespace cohort::ckpt::h5 {

// Held around every HDF5 call.
std::recursive_mutex& lock();

// Silences HDF5's automatic stack printing (once) so errors surface as exceptions only.
void quietErrors();

// The most specific message on HDF5's current error stack ("" when empty).
std::string lastError();

// Closes an HDF5 id of any kind on scope exit.
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  ~Id() { reset(); }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) reset(), id_ = o.id_, o.id_ = -1;
    return *this;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() {
    const hid_t id = id_;
    id_ = -1;
    return id;
  }
  void reset();

 private:
  hid_t id_ = -1;
};

// The file type used to store a dtype (float16: an IEEE half as h5py writes it; bfloat16:
// uint16 with the "dtype" attribute saying so; bool: uint8). Throws CheckpointCorrupt for an
// unknown dtype. The returned id is owned by the caller.
Id fileTypeFor(const std::string& dtype);

// Writes a string / int64-array attribute on an object.
void setStringAttr(hid_t obj, const char* name, const std::string& value);
void setInt64Attr(hid_t obj, const char* name, const long long* values, std::size_t n);

}  // namespace cohort::ckpt::h5
