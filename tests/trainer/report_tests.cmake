# Test files of the trainer's report area: list(APPEND COHORT_TRAINER_TEST_SOURCES ...)
