# Sources of the trainer's config area: list(APPEND COHORT_TRAINER_SOURCES ...)
# TrainingArguments (message + loading, CLI overrides, validation): docs/training-arguments.md
list(APPEND COHORT_TRAINER_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args.cc)
list(APPEND COHORT_TRAINER_PROTOS ${CMAKE_CURRENT_SOURCE_DIR}/proto/training_args.proto)
# The one-write() fatal error line of reportFatalError (issue 21).
list(APPEND COHORT_TRAINER_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/fatal_line.cc)
