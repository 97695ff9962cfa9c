# Sources of the trainer's loop area: data loading, schedules, NEFTune, the Trainer.
list(APPEND COHORT_TRAINER_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/src/data.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/token_dataset.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/neftune.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/preemption.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/schedule.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/checkpointing.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/output_storage.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/resume.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/save_policy.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/trainer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train_loop.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train_step.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/mixed_precision.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/preemption_report.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/device_placement.cc)
