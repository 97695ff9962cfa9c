# Tests of the trainer's weights area (issue 17): loadWeights / saveWeights / predict in the
# gtest binary (Unit*, WeightsCollective*, EvalPredict*: the last also runs at np 3 with the
# eval tests), and the fine-tuning round trip with Python on both ends.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/weights_test.cc)

if(TARGET cohort_trainer)
  add_executable(cohort_weights_probe ${CMAKE_CURRENT_SOURCE_DIR}/weights_probe.cc)
  target_link_libraries(cohort_weights_probe PRIVATE cohort_trainer)
  if(TARGET cohort)
    # Exits 77 (skipped) when /usr/bin/python3 lacks numpy or h5py.
    add_test(NAME trainer.weights_finetune
      COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/weights_finetune_test.sh
              $<TARGET_FILE:cohort_weights_probe> $<TARGET_FILE:cohort>
              ${PROJECT_SOURCE_DIR}/tests/ckpt/safetensors_check.py
              ${CMAKE_CURRENT_BINARY_DIR}/weights_finetune ${MPIEXEC_EXECUTABLE}
              ${COHORT_MPIEXEC_FLAGS})
    set_tests_properties(trainer.weights_finetune PROPERTIES LABELS mpi TIMEOUT 600
      PROCESSORS 2 SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
  endif()
endif()

# `--target cohort_trainer_tests` builds the probe too (the test binary is defined later).
function(cohort_weights_probe_dependency)
  if(TARGET cohort_trainer_tests AND TARGET cohort_weights_probe)
    add_dependencies(cohort_trainer_tests cohort_weights_probe)
  endif()
endfunction()
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.19)
  cmake_language(DEFER CALL cohort_weights_probe_dependency)
endif()
