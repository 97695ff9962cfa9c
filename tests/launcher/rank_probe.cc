// A stand-in for a training program, started by the launcher tests under `cohort run`.
// No MPI, no LibTorch: it only reports what the launcher gave it and reacts to signals.
//
//   rank_probe env                      print RANK, WORLD_SIZE, ... on one line
//   rank_probe preempt DIR SAVE_S       wait for SIGTERM/SIGUSR1/SIGINT, then "save" for
//                                       SAVE_S seconds: DIR/signal-R, then DIR/saved-R
//   rank_probe fail RANK CODE DIR       rank RANK exits CODE after 1 s; others wait 60 s
//   rank_probe restart DIR RANK         first run (no DIR/marker): rank RANK SIGKILLs
//                                       itself; once the marker exists every rank exits 0
//   rank_probe chatty FAILING_RANK      writes lines in pieces (byte by byte, a UTF-8
//                                       character split, '\r' redraws on rank 0); rank
//                                       FAILING_RANK then exits 1 (-1: none)
// Every mode writes DIR/ready-R once it runs (when it has a DIR).

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace {

volatile sig_atomic_t g_signal = 0;

void onSignal(int sig) {
  if (g_signal == 0) g_signal = sig;
}

std::string env(const char* name) {
  const char* v = getenv(name);
  return v ? v : "<unset>";
}

int rank() { return atoi(env("RANK").c_str()); }

void writeFile(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "w");
  if (f == nullptr) {
    fprintf(stderr, "rank_probe: cannot write %s\n", path.c_str());
    exit(4);
  }
  fputs(text.c_str(), f);
  fclose(f);
}

void sleepSeconds(double s) {
  timespec ts{static_cast<time_t>(s), static_cast<long>((s - static_cast<long>(s)) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

std::string marker(const std::string& dir, const char* what) {
  return dir + "/" + what + "-" + std::to_string(rank());
}

int printEnv() {
  std::string line;
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK",
                           "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "COHORT_RESTART_COUNT"}) {
    line += std::string(line.empty() ? "" : " ") + name + "=" + env(name);
  }
  printf("%s\n", line.c_str());
  return 0;
}

int preempt(const std::string& dir, double save_s) {
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
  // As every program under `cohort run` must: the wrapper starts it with SIGTERM/SIGUSR1
  // blocked (pending until the handlers exist); unblock them now that they do.
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaddset(&stop, sig);
  sigprocmask(SIG_UNBLOCK, &stop, nullptr);
  writeFile(marker(dir, "ready"), "");
  for (int i = 0; i < 1200 && g_signal == 0; ++i) sleepSeconds(0.05);
  if (g_signal == 0) {
    fprintf(stderr, "rank_probe: rank %d saw no stop signal in 60 s\n", rank());
    return 3;
  }
  const char* name = g_signal == SIGTERM ? "SIGTERM" : g_signal == SIGUSR1 ? "SIGUSR1" : "SIGINT";
  writeFile(marker(dir, "signal"), name);
  printf("rank %d got %s; saving for %g s\n", rank(), name, save_s);
  fflush(stdout);
  sleepSeconds(save_s);  // the "checkpoint": must not be cut short by the launcher
  writeFile(marker(dir, "saved"), "");
  printf("rank %d saved\n", rank());
  return 0;
}

int fail(int failing_rank, int code, const std::string& dir) {
  writeFile(marker(dir, "ready"), "");
  if (rank() == failing_rank) {
    sleepSeconds(1);
    fprintf(stderr, "rank %d failing with exit code %d\n", rank(), code);
    return code;
  }
  sleepSeconds(60);
  return 0;
}

int restart(const std::string& dir, int failing_rank) {
  const std::string done = dir + "/marker";
  writeFile(marker(dir, "ready"), "");
  if (access(done.c_str(), F_OK) == 0) {
    printf("rank %d resumed (restart %s)\n", rank(), env("COHORT_RESTART_COUNT").c_str());
    return 0;
  }
  if (rank() == failing_rank) {
    sleepSeconds(0.5);
    writeFile(done, "");
    raise(SIGKILL);
  }
  sleepSeconds(60);
  return 0;
}

// One write() per piece, so the pieces reach the wrapper (or mpirun) separately.
void writePieces(int fd, const std::string& text, size_t piece) {
  for (size_t i = 0; i < text.size(); i += piece) {
    const std::string part = text.substr(i, piece);
    if (write(fd, part.data(), part.size()) < 0) exit(4);
    sleepSeconds(0.002);
  }
}

int chatty(int failing_rank) {
  const int r = rank();
  if (r == 0) {
    for (int i = 1; i <= 3; ++i) {
      writePieces(1, "progress " + std::to_string(i) + "/3" + (i < 3 ? "\r" : "\n"), 4);
    }
    writePieces(1, "rank 0 says \xc3\xa9t\xc3\xa9\n", 13);  // "été", the first é split
  } else {
    writePieces(1, "hello from rank " + std::to_string(r) + " \xc3\xa9t\xc3\xa9\n", 1);
    writePieces(2, "warning from rank " + std::to_string(r) + "\n", 3);
    writePieces(1, "no newline at the end of rank " + std::to_string(r), 5);
  }
  if (r != failing_rank) return 0;
  sleepSeconds(1);  // the others end first: mpirun would stop them when this one fails
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "env") return printEnv();
  if (mode == "preempt" && argc == 4) return preempt(argv[2], atof(argv[3]));
  if (mode == "fail" && argc == 5) return fail(atoi(argv[2]), atoi(argv[3]), argv[4]);
  if (mode == "restart" && argc == 4) return restart(argv[2], atoi(argv[3]));
  if (mode == "chatty" && argc == 3) return chatty(atoi(argv[2]));
  fprintf(stderr, "usage: rank_probe env|preempt DIR SAVE_S|fail RANK CODE DIR|restart DIR RANK\n");
  return 2;
}
