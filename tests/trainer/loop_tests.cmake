# Test files of the trainer's loop area.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer_golden_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/loop_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/preemption_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/device_step_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/mixed_precision_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/loss_scaling_test.cc)
list(APPEND COHORT_TRAINER_TEST_LIBS cohort_example_models)
# The sample order is the same under libstdc++, libc++ and a Python reimplementation of
# docs/trainer.md (exit 77 = skipped when clang++/libc++ are missing).
add_test(NAME trainer.data_order
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/data_order_test.sh ${CMAKE_CXX_COMPILER} ${PROJECT_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR}/data_order)
set_tests_properties(trainer.data_order PROPERTIES LABELS unit TIMEOUT 300 SKIP_RETURN_CODE 77)
