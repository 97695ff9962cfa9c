# Test files of the trainer's loop area.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer_golden_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/loop_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/preemption_test.cc)
list(APPEND COHORT_TRAINER_TEST_LIBS cohort_example_models)
