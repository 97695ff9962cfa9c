// Token files as a Dataset: fixed-length windows of token ids, memory-mapped, for causal
// language-model training on corpora larger than RAM (docs/data.md has the file formats).
//
// Formats (TokenDatasetOptions::dtype):
//   "uint16", "uint32"  a flat array of little-endian token ids, no header (nanoGPT's
//                       train.bin: np.array(ids, dtype=np.uint16).tofile(path)).
//   "llmc"              llm.c's layout (dev/data/data_common.py): a header of 256
//                       little-endian int32, then header[2] token ids. (magic, version)
//                       = (20240520, 1): uint16 ids (GPT-2); (20240801, 7): uint32 ids
//                       (Llama 3). The file size must be exactly 1024 + count x id size.
//   "auto"              "llmc" when the first int32 is one of llm.c's magics, else
//                       "uint16" (nanoGPT's default).
// dtype applies to every file of one dataset; "auto" decides file by file.
//
// Windows (HF causal-LM convention, as `group_texts` in HF's run_clm.py): each file is cut
// into non-overlapping windows of seqLen tokens, window w = tokens[w*T, (w+1)*T); a file's
// tail shorter than T is dropped and windows never straddle files (a document boundary in
// one file does not run into the next file). The sample is input = labels = the window as
// int64 [T] (one tensor, not copied); the MODEL shifts: train with
// TrainerParts::shiftLabels = true (position t predicts labels[t + 1]), as HF models do
// internally. nextTokenLabels = true gives
// nanoGPT/llm.c's pre-shifted pairs instead: T + 1 tokens per window read at stride T,
// input = tokens[w*T, w*T+T), labels = tokens[w*T+1, w*T+T+1) (train with
// shiftLabels = false); then a file holds floor((n - 1) / T) windows.
// Dataset index i runs through the files in the given order (file 0's windows first). The
// order of training and the resume position are the GlobalBatchPlan's, as for any Dataset.
//
// Errors (ConfigError, message names the file): unreadable or missing file, wrong llm.c magic
// or version, a file shorter than its header says or with a byte count that is not a whole
// number of ids, a file with no complete window; bad options (no files, seqLen <= 0, an
// unknown dtype). An explicit "uint16"/"uint32" is trusted: an llm.c file read that way
// shows its header as 512 (or 256) tokens.
// Token ids >= vocabSize (when vocabSize > 0) are checked LAZILY, in get(), on each window as
// it is read (a full scan of a multi-GiB file at start-up would cost minutes): TokenDataError
// naming the file, the token's index and its byte offset in the file. It surfaces from
// DataLoader::next() (worker threads pass it on), at the first step that reads the window,
// on the rank that reads it only: hence not a ConfigError, which reportFatalError() leaves
// to rank 0 to print (exit 1 with "error (rank N): token file ...").
//
// Ownership and threads: the dataset owns its mappings (unmapped when the last shared_ptr
// goes). get() is thread-safe (read-only mappings, no mutable state): data-loader worker
// threads call it concurrently. Pages are read on demand by the kernel, so memory use is the
// windows touched, not the file size. Not collective.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cohort/core/error.h"
#include "cohort/trainer/data.h"

namespace cohort::trainer {

// Bad token data found while reading a window (see above). Only the reading rank has it.
class TokenDataError : public Error {
 public:
  using Error::Error;
};

struct TokenDatasetOptions {
  std::vector<std::string> files;  // read in this order; at least one
  std::int64_t seqLen = 0;         // tokens per window (T), > 0
  std::int64_t vocabSize = 0;      // 0: ids unchecked; else id >= vocabSize is a ConfigError
  std::string dtype = "auto";      // uint16 | uint32 | llmc | auto
  // false (default): labels = input, the model shifts (HF); true: labels = input shifted
  // by one token (nanoGPT / llm.c), see the header comment.
  bool nextTokenLabels = false;
};

// Opens (maps) every file and checks its header and size; throws ConfigError naming the file
// on bad input. Cost: one open + mmap per file, no read of the token data.
std::shared_ptr<const Dataset> openTokenDataset(const TokenDatasetOptions& options);

}  // namespace cohort::trainer
