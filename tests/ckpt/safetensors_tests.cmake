# safetensors (issue 17), torch-free: the reader's validation and the writer and conversions
# (gtest on cohort_ckpt_format), and `cohort ckpt export --format safetensors` against the
# HDF5 export through an independent Python reader.
add_executable(cohort_safetensors_tests ${CMAKE_CURRENT_SOURCE_DIR}/safetensors_test.cc)
target_link_libraries(cohort_safetensors_tests PRIVATE cohort_ckpt_format GTest::gtest
                                                       GTest::gtest_main)
target_compile_options(cohort_safetensors_tests PRIVATE -Wall -Wextra)
add_test(NAME ckpt.safetensors.unit COMMAND cohort_safetensors_tests)
set_tests_properties(ckpt.safetensors.unit PROPERTIES LABELS unit TIMEOUT 120)

if(TARGET cohort AND TARGET ckpt_format_fixture)
  add_test(NAME ckpt.safetensors.export
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/safetensors_export_test.sh $<TARGET_FILE:cohort>
            $<TARGET_FILE:ckpt_format_fixture> ${CMAKE_CURRENT_SOURCE_DIR}/safetensors_check.py
            ${CMAKE_CURRENT_BINARY_DIR}/safetensors_export)
  set_tests_properties(ckpt.safetensors.export PROPERTIES LABELS unit TIMEOUT 300
                       SKIP_RETURN_CODE 77)
  add_dependencies(cohort_safetensors_tests cohort ckpt_format_fixture)
endif()
