# Sources of the trainer's report area: list(APPEND COHORT_TRAINER_SOURCES ...)
# report_to writers (console, jsonl, TensorBoard event files), the progress bar, CRC32C.
list(APPEND COHORT_TRAINER_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/src/reporting.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/reporting_progress.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/tensorboard_writer.cc)
# The TensorBoard event-file schema subset (Event, Summary, text and HParams plugin data).
list(APPEND COHORT_TRAINER_PROTOS ${CMAKE_CURRENT_SOURCE_DIR}/proto/tensorboard_event.proto)
