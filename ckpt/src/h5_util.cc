#include "h5_util.h"

#include "cohort/ckpt/errors.h"

namespace cohort::ckpt::h5 {

std::recursive_mutex& lock() {
  static std::recursive_mutex m;
  return m;
}

void quietErrors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {
herr_t collect(unsigned n, const H5E_error2_t* err, void* out) {
  auto* s = static_cast<std::string*>(out);
  // The innermost entry (n == 0) is the root cause; keep it, add the API call for context.
  if (n == 0 && err->desc != nullptr) *s = err->desc;
  if (err->func_name != nullptr && n > 0 && s->find(" (in ") == std::string::npos) {
    *s += std::string(" (in ") + err->func_name + ")";
  }
  return 0;
}
}  // namespace

std::string lastError() {
  std::string s;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect, &s);
  H5Eclear2(H5E_DEFAULT);
  return s.empty() ? std::string("HDF5 error") : s;
}

void Id::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE:
      H5Fclose(id_);
      break;
    case H5I_GROUP:
      H5Gclose(id_);
      break;
    case H5I_DATASET:
      H5Dclose(id_);
      break;
    case H5I_DATASPACE:
      H5Sclose(id_);
      break;
    case H5I_DATATYPE:
      H5Tclose(id_);
      break;
    case H5I_ATTR:
      H5Aclose(id_);
      break;
    case H5I_GENPROP_LST:
      H5Pclose(id_);
      break;
    default:
      break;
  }
  id_ = -1;
}

Id fileTypeFor(const std::string& dtype) {
  hid_t base = -1;
  if (dtype == "float32")
    base = H5T_IEEE_F32LE;
  else if (dtype == "float64")
    base = H5T_IEEE_F64LE;
  else if (dtype == "int64")
    base = H5T_STD_I64LE;
  else if (dtype == "int32")
    base = H5T_STD_I32LE;
  else if (dtype == "int16")
    base = H5T_STD_I16LE;
  else if (dtype == "int8")
    base = H5T_STD_I8LE;
  else if (dtype == "uint8" || dtype == "bool")
    base = H5T_STD_U8LE;
  else if (dtype == "bfloat16")
    base = H5T_STD_U16LE;
  if (base >= 0) return Id(H5Tcopy(base));
  if (dtype == "float16") {
    // IEEE 754 binary16: sign bit 15, exponent bits 10-14 (bias 15), mantissa bits 0-9.
    Id t(H5Tcopy(H5T_IEEE_F32LE));
    H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
    H5Tset_size(t.get(), 2);
    H5Tset_ebias(t.get(), 15);
    return t;
  }
  throw CheckpointCorrupt("unknown dtype '" + dtype + "'");
}

void setStringAttr(hid_t obj, const char* name, const std::string& value) {
  Id type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  Id space(H5Screate(H5S_SCALAR));
  Id attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), value.empty() ? "" : value.data()) < 0) {
    throw CheckpointError(std::string("cannot write attribute ") + name + ": " + lastError());
  }
}

void setInt64Attr(hid_t obj, const char* name, const long long* values, std::size_t n) {
  const hsize_t dims[1] = {n};
  Id space(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, dims, nullptr));
  Id attr(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid() || (n > 0 && H5Awrite(attr.get(), H5T_NATIVE_LLONG, values) < 0)) {
    throw CheckpointError(std::string("cannot write attribute ") + name + ": " + lastError());
  }
}

}  // namespace cohort::ckpt::h5
