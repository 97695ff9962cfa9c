# `cohort ckpt ls|verify|inspect|export` (included by launcher/CMakeLists.txt). It links only
# the torch-free checkpoint format library (HDF5 + protobuf), never LibTorch or CUDA.
if(TARGET cohort_ckpt_format)
  list(APPEND COHORT_LAUNCHER_CKPT_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/ckpt_command.cc)
  list(APPEND COHORT_LAUNCHER_CKPT_LIBS cohort_ckpt_format)
endif()
