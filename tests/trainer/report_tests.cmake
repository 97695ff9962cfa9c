# Test files of the trainer's report area: list(APPEND COHORT_TRAINER_TEST_SOURCES ...)
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reporting_test.cc
     ${CMAKE_CURRENT_SOURCE_DIR}/reporting_format_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/progress_bar_test.cc)

# The event files read back by an independent Python reader (tensorboard_reader.py).
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tensorboard_test.cc)
