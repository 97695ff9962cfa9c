# Test files of the trainer's loop area: list(APPEND COHORT_TRAINER_TEST_SOURCES ...)
