# Test files of issue 16 part A: named-tensor batches, label_names, run_name, TorchScript
# models in the Trainer.
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/named_batch_test.cc)
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/script_model_test.cc)
# Issue 16's acceptance test: a Python GPT (torch.jit.script) trained by cohort-train at 1, 2
# and 4 ranks equals one PyTorch AdamW process on the same batches; bad inputs exit 2.
# examples/ is configured before tests/, so cohort-train exists here. Exit 77: no python3-torch.
if(TARGET cohort-train)
  add_test(NAME examples.cohort_train_parity
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/script/parity_test.sh $<TARGET_FILE:cohort-train>
            ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_BINARY_DIR}/cohort_train_parity
            ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(examples.cohort_train_parity PROPERTIES LABELS mpi TIMEOUT 600
    PROCESSORS 2 SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
