# Sources of the trainer's TorchScript area (issue 16): TorchScript models in the Trainer.
# script_model.cc is the only file that includes LibTorch's TorchScript API (its runtime is
# part of libtorch_cpu, which the trainer links anyway): one heavy TU, nothing else pays.
list(APPEND COHORT_TRAINER_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/script_model.cc)
