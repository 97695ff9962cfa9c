# `cohort ckpt ls|verify|inspect|export` (included by launcher/CMakeLists.txt): sources of the
# cohort-ckpt helper that `cohort ckpt` execs. It links only the torch-free checkpoint format
# library (HDF5 + protobuf), never LibTorch or CUDA; `cohort` itself links neither.
if(TARGET cohort_ckpt_format)
  list(APPEND COHORT_LAUNCHER_CKPT_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/ckpt_command.cc)
  list(APPEND COHORT_LAUNCHER_CKPT_LIBS cohort_ckpt_format)
endif()
