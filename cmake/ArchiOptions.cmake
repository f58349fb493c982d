# Build options. ARCHI_WITH_* take AUTO (build when found, skip with a message otherwise), ON
# (required: configuration fails when missing) or OFF.
set(ARCHI_WITH_CUDA AUTO CACHE STRING "Build CUDA code (AUTO|ON|OFF)")
set(ARCHI_WITH_NCCL AUTO CACHE STRING "Build the NCCL backend (AUTO|ON|OFF)")
set(ARCHI_WITH_MPI AUTO CACHE STRING "Build MPI launch helpers and MPI benchmarks (AUTO|ON|OFF)")
set_property(CACHE ARCHI_WITH_CUDA ARCHI_WITH_NCCL ARCHI_WITH_MPI PROPERTY STRINGS AUTO ON OFF)
option(ARCHI_BUILD_TESTS "Build the GoogleTest suites" ON)
option(ARCHI_BUILD_BENCH "Build benchmarks" ON)
option(ARCHI_WERROR "Treat warnings as errors" OFF)
set(ARCHI_SANITIZE "" CACHE STRING "Sanitizers, e.g. address,undefined or thread")

include(GNUInstallDirs)

add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wno-unused-parameter>")
if(ARCHI_WERROR)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-Werror>")
endif()
if(ARCHI_SANITIZE)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${ARCHI_SANITIZE};-fno-omit-frame-pointer>")
  add_link_options("-fsanitize=${ARCHI_SANITIZE}")
endif()
