# Test files of issue 16 part A: named-tensor batches, label_names, run_name, TorchScript
# models in the Trainer.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/named_batch_test.cc)
