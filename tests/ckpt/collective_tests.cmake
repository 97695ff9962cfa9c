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

add_executable(cohort_ckpt_tests ${PROJECT_SOURCE_DIR}/tests/mpi_main.cc
               ${CMAKE_CURRENT_SOURCE_DIR}/checkpointer_test.cc
               ${CMAKE_CURRENT_SOURCE_DIR}/save_faults_mpi_test.cc)
# ckpt/src: the private FileOps seam, through which the fault tests inject ENOSPC/EIO.
target_include_directories(cohort_ckpt_tests PRIVATE ${PROJECT_SOURCE_DIR}/tests
                                                     ${PROJECT_SOURCE_DIR}/ckpt/src)
target_link_libraries(cohort_ckpt_tests PRIVATE cohort_ckpt GTest::gtest)
foreach(np 1 2 4)
  cohort_add_mpi_test(ckpt.checkpointer.np${np} ${np} 300 mpi $<TARGET_FILE:cohort_ckpt_tests>)
endforeach()

add_test(NAME ckpt.policies
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/policy_test.sh $<TARGET_FILE:ckpt_train_probe>
          ${COHORT_CKPT_MPIEXEC})
set_tests_properties(ckpt.policies PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")

if(TARGET cohort)
  set(COHORT_CKPT_CLI $<TARGET_FILE:cohort>)
else()
  set(COHORT_CKPT_CLI -)
endif()
add_test(NAME ckpt.crash_safety
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/crash_test.sh $<TARGET_FILE:ckpt_train_probe>
          ${COHORT_CKPT_CLI} ${COHORT_CKPT_MPIEXEC})
set_tests_properties(ckpt.crash_safety PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")

# Preemption and faults (issue 7): the chaos test and the fault cases, 4 ranks.
add_test(NAME ckpt.preemption_chaos
  COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/preemption_chaos.py $<TARGET_FILE:ckpt_train_probe>
          ${COHORT_CKPT_MPIEXEC})
set_tests_properties(ckpt.preemption_chaos PROPERTIES LABELS mpi TIMEOUT 1200 PROCESSORS 2
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
add_test(NAME ckpt.faults
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fault_test.sh $<TARGET_FILE:ckpt_train_probe>
          ${COHORT_CKPT_CLI} ${COHORT_CKPT_MPIEXEC})
set_tests_properties(ckpt.faults PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
# Resume decisions (issue 20): a crash in the first save under `cohort run --max-restarts`,
# a damaged complete checkpoint, shapes that do not fit the model.
if(TARGET cohort)
  add_test(NAME ckpt.resume_checks
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_checks_test.sh $<TARGET_FILE:ckpt_train_probe>
            $<TARGET_FILE:cohort> $<TARGET_FILE:ckpt_format_fixture> ${COHORT_CKPT_MPIEXEC})
  set_tests_properties(ckpt.resume_checks PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
