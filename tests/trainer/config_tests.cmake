# Test files of the trainer's config area: list(APPEND COHORT_TRAINER_TEST_SOURCES ...)
