// `cohort ckpt export`: one plain HDF5 file of full tensors, for inference or other tools.
#include <filesystem>

#include "cohort/ckpt/format.h"
#include "h5_util.h"

namespace cohort::ckpt {

int exportConsolidated(const std::string& dir, const std::string& outFile,
                       const std::string& prefix) {
  const Manifest m = readManifest(dir);
  // The shards hold every dataset the manifest lists, at its length: no tensor below is
  // larger than the files it comes from.
  const CheckpointInfo info = inspectCheckpoint(dir, /*verifyChecksums=*/false);
  if (info.status != CheckpointStatus::kValid) {
    throw CheckpointCorrupt(dir + " is " + statusName(info.status) + ": " + info.reason);
  }
  RangeReader reader(dir, m);
  std::lock_guard<std::recursive_mutex> lk(h5::lock());
  h5::quietErrors();
  const std::string tmp = outFile + ".tmp";
  h5::Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!file.valid()) throw CheckpointError("cannot create " + tmp + ": " + h5::lastError());
  h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  int written = 0;
  for (const TensorEntry& t : m.tensors()) {
    if (t.name().rfind(prefix, 0) != 0) continue;
    const std::int64_t numel = numelOf(t);
    std::vector<char> data(static_cast<std::size_t>(numel) * dtypeSize(t.dtype()));
    reader.read(t, 0, numel, data.data());
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    h5::Id space(dims.empty()
                     ? H5Screate(H5S_SCALAR)
                     : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    h5::Id type = h5::fileTypeFor(t.dtype());
    const std::string path = "/" + t.name().substr(prefix.size());
    h5::Id dset(H5Dcreate2(file.get(), path.c_str(), type.get(), space.get(), lcpl.get(),
                           H5P_DEFAULT, H5P_DEFAULT));
    if (!dset.valid() || (numel > 0 && H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL,
                                                H5P_DEFAULT, data.data()) < 0)) {
      throw CheckpointError("cannot write " + path + " to " + tmp + ": " + h5::lastError());
    }
    h5::setStringAttr(dset.get(), "dtype", t.dtype());
    ++written;
  }
  if (H5Fclose(file.release()) < 0)
    throw CheckpointError("cannot close " + tmp + ": " + h5::lastError());
  fsyncPath(tmp);
  std::filesystem::rename(tmp, outFile);
  return written;
}

}  // namespace cohort::ckpt
