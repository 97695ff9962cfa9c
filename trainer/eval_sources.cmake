# Sources of the trainer's evaluation area: the sharded eval loop, gathering and metrics
# (docs/evaluation.md).
list(APPEND COHORT_TRAINER_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/evaluation.cc)
