# Test files of the trainer's loop area.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer_golden_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/loop_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/preemption_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/device_step_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/mixed_precision_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/loss_scaling_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/full_eval_test.cc)
list(APPEND COHORT_TRAINER_TEST_LIBS cohort_example_models)
# The sample order is the same under libstdc++, libc++ and a Python reimplementation of
# docs/trainer.md (exit 77 = skipped when clang++/libc++ are missing).
add_test(NAME trainer.data_order
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/data_order_test.sh ${CMAKE_CXX_COMPILER} ${PROJECT_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR}/data_order)
set_tests_properties(trainer.data_order PROPERTIES LABELS unit TIMEOUT 300 SKIP_RETURN_CODE 77)
# The memory-mapped token dataset (issue 16 B).
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/token_dataset_test.cc)
# The Trainer on token files: resume mid-epoch at another world size (2 ranks, then 1) and
# bad files at 2 ranks (token_resume_test.sh, token_probe.cc).
if(TARGET cohort_trainer)
  add_executable(cohort_token_probe ${CMAKE_CURRENT_SOURCE_DIR}/token_probe.cc)
  target_link_libraries(cohort_token_probe PRIVATE cohort_trainer)
  add_test(NAME trainer.token_resume
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/token_resume_test.sh $<TARGET_FILE:cohort_token_probe>
            ${CMAKE_CURRENT_BINARY_DIR}/token_resume ${MPIEXEC_EXECUTABLE} ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(trainer.token_resume PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
function(cohort_token_probe_dependency)  # `--target cohort_trainer_tests` builds the probe too
  if(TARGET cohort_trainer_tests AND TARGET cohort_token_probe)
    add_dependencies(cohort_trainer_tests cohort_token_probe)
  endif()
endfunction()
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.19)
  cmake_language(DEFER CALL cohort_token_probe_dependency)
endif()
