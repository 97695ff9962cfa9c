#pragma once
// One fatal-error line, written the way a launcher can show it whole. mpirun tags every
// write() of a rank's stderr with "[1,r]<stderr>:", so a line written byte by byte (stderr
// is unbuffered) arrives as one tagged fragment per byte, UTF-8 split apart. The line is
// assembled in a fixed buffer and written with ONE write(); it stays within PIPE_BUF so a
// pipe delivers it in one piece. No allocation: callable from noexcept error paths.

#include <cstdio>
#include <string_view>

namespace cohort::trainer {

// The longest line writeFatalLine() writes, newline included (PIPE_BUF on Linux).
inline constexpr std::size_t kFatalLineMax = 4096;

// Writes PREFIX + MESSAGE + "\n" to OUT with one write() after flushing OUT. In MESSAGE a
// newline, carriage return or tab becomes a space, every other control byte (< 0x20, 0x7f)
// is escaped as "\xNN"; other bytes (UTF-8 included) are kept. A message that does not fit
// is cut at a character boundary and ends in " [...]". Never throws.
void writeFatalLine(std::FILE* out, std::string_view prefix, std::string_view message) noexcept;

}  // namespace cohort::trainer
