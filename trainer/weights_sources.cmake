# Sources of the trainer's weights area (issue 17): loadWeights / saveWeights, the
# Trainer's saveModel and predict (docs/trainer.md, "Weights in and out" and "predict").
list(APPEND COHORT_TRAINER_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/src/weights.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/weights_agree.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/save_model.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/predict.cc)
