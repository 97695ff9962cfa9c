# Sources of the trainer's config area: list(APPEND COHORT_TRAINER_SOURCES ...)
# TrainingArguments (message + loading, CLI overrides, validation): docs/training-arguments.md
list(APPEND COHORT_TRAINER_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args_parse.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args_cli.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args_validate.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args_derive.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/training_args_dump.cc)
list(APPEND COHORT_TRAINER_PROTOS ${CMAKE_CURRENT_SOURCE_DIR}/proto/training_args.proto)
# main()'s exit: the one-write() fatal error line (issue 21), ordered by dist::ExitOrder.
list(APPEND COHORT_TRAINER_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/fatal_line.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/program_exit.cc)
