# Install rules and the exported CMake package: find_package(Archipelago) -> archi::archi.
include(CMakePackageConfigHelpers)

set(_archi_libs archi_core archi_policy archi_proto archi_kernels archi_model archi_collectives archi_world archi_executor archi_coordinator archi_frontend archi)
if(TARGET archi_kernels_cuda)
  list(APPEND _archi_libs archi_kernels_cuda)
endif()
install(TARGETS ${_archi_libs} EXPORT ArchipelagoTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Public headers keep their source paths under include/archipelago/.
foreach(dir runtime/core runtime/policy runtime/model runtime/executor runtime/coordinator runtime/frontend kernels collectives world)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/archipelago/${dir}
    FILES_MATCHING PATTERN "*.h" PATTERN "cpu" EXCLUDE PATTERN "nccl" EXCLUDE PATTERN "cuda" EXCLUDE PATTERN "tools" EXCLUDE)
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/include/archi/config.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/archipelago/archi)

install(EXPORT ArchipelagoTargets NAMESPACE archi:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Archipelago)
configure_package_config_file(cmake/ArchipelagoConfig.cmake.in
  ${PROJECT_BINARY_DIR}/ArchipelagoConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Archipelago)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ArchipelagoConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ArchipelagoConfig.cmake ${PROJECT_BINARY_DIR}/ArchipelagoConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/Archipelago)
