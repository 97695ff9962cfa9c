# Sources of the trainer's report area: list(APPEND COHORT_TRAINER_SOURCES ...)
