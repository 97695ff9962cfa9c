# Finds the optional CUDA toolkit and NCCL. COHORT_WITH_CUDA / COHORT_WITH_NCCL are
# AUTO (use when found), ON (configure error naming what is missing) or OFF.
foreach(opt COHORT_WITH_CUDA COHORT_WITH_NCCL)
  if(NOT ${opt} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "${opt}=${${opt}}: expected AUTO, ON or OFF")
  endif()
endforeach()

set(COHORT_HAVE_CUDA 0)
set(COHORT_HAVE_NCCL 0)
set(COHORT_TORCH_CUDA 0)

if(NOT COHORT_WITH_CUDA STREQUAL "OFF")
  if(NOT DEFINED CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT}
     AND EXISTS /usr/local/cuda/include/cuda_runtime_api.h)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND AND TARGET CUDA::cudart)
    set(COHORT_HAVE_CUDA 1)
  elseif(COHORT_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "COHORT_WITH_CUDA=ON but the CUDA toolkit (cuda_runtime_api.h and "
                        "libcudart) was not found: set CUDAToolkit_ROOT to its prefix")
  endif()
endif()

if(NOT COHORT_WITH_NCCL STREQUAL "OFF")
  if(NOT COHORT_HAVE_CUDA)
    if(COHORT_WITH_NCCL STREQUAL "ON")
      message(FATAL_ERROR "COHORT_WITH_NCCL=ON needs the CUDA toolkit, which was not found "
                          "(or COHORT_WITH_CUDA=OFF)")
    endif()
  else()
    find_path(NCCL_INCLUDE_DIR nccl.h
      HINTS $ENV{NCCL_HOME} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}
      PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY nccl
      HINTS $ENV{NCCL_HOME} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}
      PATH_SUFFIXES lib lib64)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(COHORT_HAVE_NCCL 1)
      add_library(cohort_nccl_lib UNKNOWN IMPORTED)
      set_target_properties(cohort_nccl_lib PROPERTIES
        IMPORTED_LOCATION "${NCCL_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
    elseif(COHORT_WITH_NCCL STREQUAL "ON")
      message(FATAL_ERROR "COHORT_WITH_NCCL=ON but NCCL was not found (nccl.h: "
                          "${NCCL_INCLUDE_DIR}, libnccl: ${NCCL_LIBRARY}): set NCCL_HOME")
    endif()
  endif()
endif()

# A CUDA build of LibTorch exports c10_cuda; Debian's CPU LibTorch does not.
if(TARGET c10_cuda OR TARGET torch_cuda)
  set(COHORT_TORCH_CUDA 1)
endif()

# Why the GPU-labelled tests (tests/gpu, built only with NCCL) are not built, for scripts/test
# to say in one line; empty when they are.
if(COHORT_HAVE_NCCL)
  set(_cohort_gpu_note "")
elseif(COHORT_WITH_CUDA STREQUAL "OFF")
  set(_cohort_gpu_note "CUDA is off (COHORT_WITH_CUDA=OFF)")
elseif(NOT COHORT_HAVE_CUDA)
  set(_cohort_gpu_note "no CUDA toolkit found (looked in CUDAToolkit_ROOT, /usr/local/cuda, "
                       "CUDA_PATH, nvcc's prefix on PATH)")
elseif(COHORT_WITH_NCCL STREQUAL "OFF")
  set(_cohort_gpu_note "NCCL is off (COHORT_WITH_NCCL=OFF)")
else()
  set(_cohort_gpu_note "no NCCL found (looked in NCCL_HOME, NCCL_ROOT, the CUDA toolkit, "
                       "the system paths)")
endif()
string(CONCAT _cohort_gpu_note ${_cohort_gpu_note})
set(COHORT_GPU_TESTS_SKIPPED "${_cohort_gpu_note}" CACHE INTERNAL
    "why the GPU-labelled tests are not built (empty: they are)")
