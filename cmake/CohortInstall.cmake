# `cmake --install` exports the libraries as the CMake package Cohort:
#   find_package(Cohort REQUIRED)  ->  target_link_libraries(app Cohort::dist)
include(CMakePackageConfigHelpers)

install(TARGETS cohort_dist EXPORT CohortTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY dist/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(COHORT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Cohort)
install(EXPORT CohortTargets NAMESPACE Cohort:: DESTINATION ${COHORT_CMAKE_DIR})
configure_package_config_file(cmake/CohortConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/CohortConfig.cmake INSTALL_DESTINATION ${COHORT_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/CohortConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/CohortConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/CohortConfigVersion.cmake
        DESTINATION ${COHORT_CMAKE_DIR})
