# The torch-free checkpoint format (included by tests/ckpt/CMakeLists.txt). Nothing here links
# LibTorch or MPI: cohort_ckpt_format only.
#   ckpt.format.unit                CRC32C, round trips, corruption, listing (gtest)
#   ckpt.save_faults                ENOSPC/EIO at each step of the save protocol, injected
#                                   through the FileOps seam (ckpt/src/file_ops.h, private)
#   ckpt.format.independent_reader  h5py + docs/checkpoint-format.md rules read what we wrote
#   ckpt.cli                        `cohort ckpt ls|verify|inspect|export` (when the launcher
#                                   target exists)
find_package(GTest REQUIRED)

add_executable(cohort_ckpt_format_tests ${CMAKE_CURRENT_SOURCE_DIR}/format_test.cc
               ${CMAKE_CURRENT_SOURCE_DIR}/integrity_test.cc
               ${CMAKE_CURRENT_SOURCE_DIR}/save_faults_test.cc)
# The private FileOps seam (file_ops.h): the fault tests install a faulty implementation.
target_include_directories(cohort_ckpt_format_tests PRIVATE ${PROJECT_SOURCE_DIR}/ckpt/src)
target_link_libraries(cohort_ckpt_format_tests PRIVATE cohort_ckpt_format GTest::gtest
                                                       GTest::gtest_main)
target_compile_options(cohort_ckpt_format_tests PRIVATE -Wall -Wextra)
add_test(NAME ckpt.format.unit COMMAND cohort_ckpt_format_tests --gtest_filter=-*SaveFault*)
set_tests_properties(ckpt.format.unit PROPERTIES LABELS unit TIMEOUT 300)
add_test(NAME ckpt.save_faults COMMAND cohort_ckpt_format_tests --gtest_filter=*SaveFault*)
set_tests_properties(ckpt.save_faults PROPERTIES LABELS unit TIMEOUT 300)

# Writes a small checkpoint with known values (and the raw expected bytes) for the tests
# that read checkpoints from outside: the independent reader and the CLI.
add_executable(ckpt_format_fixture ${CMAKE_CURRENT_SOURCE_DIR}/format_fixture.cc)
target_link_libraries(ckpt_format_fixture PRIVATE cohort_ckpt_format)
target_compile_options(ckpt_format_fixture PRIVATE -Wall -Wextra)
add_dependencies(cohort_ckpt_format_tests ckpt_format_fixture)

# Exits 77 (skipped, with a message) when /usr/bin/python3 lacks h5py or numpy.
add_test(NAME ckpt.format.independent_reader
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/format_independent_reader.sh
          $<TARGET_FILE:ckpt_format_fixture> ${CMAKE_CURRENT_SOURCE_DIR}/independent_reader.py
          ${CMAKE_CURRENT_BINARY_DIR}/independent_reader)
set_tests_properties(ckpt.format.independent_reader PROPERTIES LABELS unit TIMEOUT 300
                     SKIP_RETURN_CODE 77)

if(TARGET cohort)
  add_test(NAME ckpt.cli
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_test.sh $<TARGET_FILE:cohort>
            $<TARGET_FILE:ckpt_format_fixture> ${CMAKE_CURRENT_SOURCE_DIR}/independent_reader.py
            ${CMAKE_CURRENT_BINARY_DIR}/cli)
  set_tests_properties(ckpt.cli PROPERTIES LABELS unit TIMEOUT 300)
  add_dependencies(cohort_ckpt_format_tests cohort)
endif()
