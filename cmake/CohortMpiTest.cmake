# cohort_add_mpi_test(NAME NP TIMEOUT LABELS COMMAND...): registers COMMAND under mpiexec
# with NP ranks. --oversubscribe lets 4 ranks share 2 cores; the root-only flag is added
# only when configuring as root. One thread per rank.
execute_process(COMMAND id -u OUTPUT_VARIABLE COHORT_UID OUTPUT_STRIP_TRAILING_WHITESPACE)
set(COHORT_MPIEXEC_FLAGS --oversubscribe)
if(COHORT_UID STREQUAL "0")
  list(APPEND COHORT_MPIEXEC_FLAGS --allow-run-as-root)
endif()

function(cohort_add_mpi_test name np timeout labels)
  add_test(NAME ${name}
    COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${COHORT_MPIEXEC_FLAGS}
            ${MPIEXEC_PREFLAGS} ${ARGN} ${MPIEXEC_POSTFLAGS})
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT ${timeout}
    PROCESSORS ${np}
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endfunction()
