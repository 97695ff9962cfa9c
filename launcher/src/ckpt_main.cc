// cohort-ckpt: the helper that `cohort ckpt ARGS...` execs (launcher/src/ckpt_helper.h). It
// links the checkpoint format library (HDF5, protobuf), which `cohort` itself does not.
// Run directly, `cohort-ckpt ARGS...` is the same as `cohort ckpt ARGS...`.

int runCkptCommand(int argc, char** argv);  // launcher/src/ckpt_command.cc

int main(int argc, char** argv) {
  // runCkptCommand expects argv[0] == "ckpt", as `cohort` passes it.
  char ckpt[] = "ckpt";
  argv[0] = ckpt;
  return runCkptCommand(argc, argv);
}
