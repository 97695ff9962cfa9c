#include "ckpt_helper.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "sys_util.h"

namespace cohort::launcher {

int execCkptHelper(int argc, char** argv) {
  // /proc/self/exe, so that a symlink to cohort (or a relative argv[0]) finds the real tree;
  // PATH only when /proc is not readable.
  const std::string self = selfExecutable();
  const std::size_t slash = self.rfind('/');
  std::string helper;
  if (slash != std::string::npos) {
    helper = self.substr(0, slash + 1) + kCkptHelperName;
  } else {
    helper = findExecutable(kCkptHelperName, environmentSnapshot()).value_or(kCkptHelperName);
  }
  std::vector<char*> args;
  args.push_back(const_cast<char*>(helper.c_str()));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(helper.c_str(), args.data());
  const int err = errno;
  fprintf(stderr, "cohort ckpt: cannot run %s: %s (it is installed next to cohort)\n",
          helper.c_str(), strerror(err));
  return 2;
}

}  // namespace cohort::launcher
