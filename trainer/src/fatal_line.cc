#include "fatal_line.h"

#include <errno.h>
#include <unistd.h>

namespace cohort::trainer {

void writeFatalLine(std::FILE* out, std::string_view prefix, std::string_view message) noexcept {
  static constexpr std::string_view kCut = " [...]";
  char line[kFatalLineMax];
  const std::size_t room = sizeof(line) - kCut.size() - 1;  // keep space for the cut and \n
  std::size_t n = 0;
  bool cut = false;
  auto put = [&](std::string_view bytes) {
    if (cut || n + bytes.size() > room) {
      cut = true;
      return;
    }
    for (char c : bytes) line[n++] = c;
  };
  put(prefix);
  for (std::size_t i = 0; i < message.size() && !cut; ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (c == '\n' || c == '\r' || c == '\t') {
      put(" ");
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      const char esc[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
      put(std::string_view(esc, 4));
    } else if (c >= 0xc0) {  // a UTF-8 lead byte: the whole character or nothing
      std::size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      put(message.substr(i, len));
      i += len - 1;
    } else {
      put(std::string_view(&message[i], 1));
    }
  }
  if (cut) {
    for (char c : kCut) line[n++] = c;
  }
  line[n++] = '\n';
  std::fflush(out);  // whatever the program printed before comes first
  const int fd = fileno(out);
  std::size_t done = 0;
  while (fd >= 0 && done < n) {
    const ssize_t w = ::write(fd, line + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    done += static_cast<std::size_t>(w);
  }
}

}  // namespace cohort::trainer
