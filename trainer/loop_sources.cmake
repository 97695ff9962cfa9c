# Sources of the trainer's loop area: list(APPEND COHORT_TRAINER_SOURCES ...)
