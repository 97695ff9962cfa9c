# The collective checkpoint protocol through the Trainer, with real ranks.
add_executable(ckpt_train_probe ${CMAKE_CURRENT_SOURCE_DIR}/train_probe.cc)
target_link_libraries(ckpt_train_probe PRIVATE cohort_example_models cohort_trainer)
target_include_directories(ckpt_train_probe PRIVATE ${PROJECT_SOURCE_DIR}/examples)

set(COHORT_CKPT_MPIEXEC ${MPIEXEC_EXECUTABLE} ${COHORT_MPIEXEC_FLAGS} ${MPIEXEC_PREFLAGS})
add_test(NAME ckpt.resume_equivalence
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_test.sh $<TARGET_FILE:ckpt_train_probe>
          ${COHORT_CKPT_MPIEXEC})
set_tests_properties(ckpt.resume_equivalence PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
