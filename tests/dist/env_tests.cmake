# The COHORT_* environment registry (dist/include/cohort/dist/env.h), included from
# tests/CMakeLists.txt. cohort_env_tests links cohort_env alone: no MPI, no LibTorch; with it
# the host allocator tuning (dist/allocator_test.cc).
add_executable(cohort_env_tests dist/env_test.cc dist/allocator_test.cc)
target_include_directories(cohort_env_tests PRIVATE ${PROJECT_SOURCE_DIR}/dist/src)
target_link_libraries(cohort_env_tests PRIVATE cohort_env GTest::gtest GTest::gtest_main)
target_compile_definitions(cohort_env_tests PRIVATE COHORT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_test(NAME dist.env COMMAND cohort_env_tests)
set_tests_properties(dist.env PROPERTIES LABELS unit TIMEOUT 60)

add_test(NAME dist.env_compile
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/dist/env_compile_test.sh ${CMAKE_CXX_COMPILER}
          ${PROJECT_SOURCE_DIR}/dist/include)
set_tests_properties(dist.env_compile PROPERTIES LABELS unit TIMEOUT 120)

# Override notices: once, from rank 0 only.
add_executable(cohort_env_override_probe dist/env_override_probe.cc)
target_link_libraries(cohort_env_override_probe PRIVATE cohort_dist)
foreach(np 2 4)
  add_test(NAME dist.env_override.np${np}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/dist/env_override_test.sh
            $<TARGET_FILE:cohort_env_override_probe> ${np} ${MPIEXEC_EXECUTABLE}
            ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(dist.env_override.np${np} PROPERTIES LABELS mpi TIMEOUT 120
    PROCESSORS ${np} ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()
