# `cmake --install` exports the libraries (dist, ckpt_format, ckpt, trainer) as the package Cohort:
#   find_package(Cohort REQUIRED)  ->  target_link_libraries(app Cohort::dist Cohort::trainer)
include(CMakePackageConfigHelpers)

set(COHORT_INSTALL_TARGETS cohort_core cohort_env cohort_dist cohort_ckpt_format cohort_ckpt)
install(DIRECTORY core/include/ dist/include/ ckpt/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The generated manifest header is part of the checkpoint API: "cohort/ckpt/manifest.pb.h".
install(FILES ${CMAKE_BINARY_DIR}/ckpt/gen/cohort/ckpt/manifest.pb.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cohort/ckpt)
if(TARGET cohort_trainer)
  list(APPEND COHORT_INSTALL_TARGETS cohort_trainer)
  install(DIRECTORY trainer/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  # The generated TrainingArguments header is part of the trainer's public API:
  # "cohort/trainer/training_args.pb.h".
  install(FILES ${CMAKE_BINARY_DIR}/trainer/gen/cohort/trainer/training_args.pb.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cohort/trainer)
endif()
install(TARGETS ${COHORT_INSTALL_TARGETS} EXPORT CohortTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(COHORT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Cohort)
install(EXPORT CohortTargets NAMESPACE Cohort:: DESTINATION ${COHORT_CMAKE_DIR})
configure_package_config_file(cmake/CohortConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/CohortConfig.cmake INSTALL_DESTINATION ${COHORT_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/CohortConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/CohortConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/CohortConfigVersion.cmake
        DESTINATION ${COHORT_CMAKE_DIR})
