# Test files of the trainer's evaluation area (docs/evaluation.md). The 3-rank run (an odd
# world size: shards that do not divide evenly) is registered at the end of CMakeLists.txt,
# where the test binary exists.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/evaluation_test.cc)
