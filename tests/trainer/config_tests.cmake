# Test files of the trainer's config area: list(APPEND COHORT_TRAINER_TEST_SOURCES ...)
# TrainingArguments: loading, CLI overrides, validation, dumps (gtest; Unit* and Mpi*).
list(APPEND COHORT_TRAINER_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/training_args_test.cc
     ${CMAKE_CURRENT_SOURCE_DIR}/training_args_validation_test.cc)

# A bad config under mpirun: every rank exits 2 with one error line, no hang.
if(TARGET cohort_trainer)
  add_executable(cohort_config_probe ${CMAKE_CURRENT_SOURCE_DIR}/config_probe.cc)
  target_link_libraries(cohort_config_probe PRIVATE cohort_trainer)
  add_test(NAME trainer.config_exit
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/config_exit_test.sh $<TARGET_FILE:cohort_config_probe>
            ${CMAKE_CURRENT_SOURCE_DIR}/fixtures ${MPIEXEC_EXECUTABLE} ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(trainer.config_exit PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()

# The build command for the trainer tests is `--target cohort_trainer_tests`: make it build
# the probe too. That target is defined after this file is included, hence DEFER.
function(cohort_config_probe_dependency)
  if(TARGET cohort_trainer_tests AND TARGET cohort_config_probe)
    add_dependencies(cohort_trainer_tests cohort_config_probe)
  endif()
endfunction()
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.19)
  cmake_language(DEFER CALL cohort_config_probe_dependency)
endif()
