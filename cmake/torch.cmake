# torch from the project venv (scripts/setup.sh installs it): the interface target nibble_torch.
# The Python module needs Python's headers; without it (NIBBLE_PYTHON=OFF) the interpreter alone finds torch.
if(NIBBLE_PYTHON)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
else()
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
endif()
execute_process(
  COMMAND ${Python3_EXECUTABLE} -c "import torch, os; print(os.path.dirname(torch.__file__))"
  OUTPUT_VARIABLE NIBBLE_TORCH_DIR OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE torch_found)
if(NOT torch_found EQUAL 0)
  message(FATAL_ERROR "nibble's core/ and Python module need torch in ${Python3_EXECUTABLE}; run "
                      "scripts/setup.sh, or point -DPython3_EXECUTABLE at a Python that has torch")
endif()
execute_process(
  COMMAND ${Python3_EXECUTABLE} -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE NIBBLE_TORCH_CXX11_ABI OUTPUT_STRIP_TRAILING_WHITESPACE)

# Only torch's CPU libraries are needed, so torch is described by hand instead of through
# TorchConfig.cmake, which would also demand a matching CUDA toolkit for torch's CUDA build.
# nibble_torch is libtorch (C++ programs and libraries); the Python module adds torch_python.
add_library(nibble_torch INTERFACE)
target_include_directories(nibble_torch SYSTEM INTERFACE
  ${NIBBLE_TORCH_DIR}/include ${NIBBLE_TORCH_DIR}/include/torch/csrc/api/include)
target_compile_definitions(nibble_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${NIBBLE_TORCH_CXX11_ABI})
target_link_directories(nibble_torch INTERFACE ${NIBBLE_TORCH_DIR}/lib)
target_link_libraries(nibble_torch INTERFACE c10 torch torch_cpu)
set(CMAKE_BUILD_RPATH "${CMAKE_BUILD_RPATH};${NIBBLE_TORCH_DIR}/lib")

# Most sources of the torch-using libraries parse torch's headers (<torch/torch.h> alone is most of such a
# source's compile time). Each of those libraries compiles them once, into a precompiled header those sources
# load instead: the same declarations, about half the compile time. Loading it (~700 MB) costs a torch-free
# source seconds, so cmake/torch_includers.py picks the sources that reach torch through their includes and
# the others compile the plain way. One PCH per library, not one shared: GCC uses a PCH only under the flags
# it was built with, and each library has its own definitions. NIBBLE_PCH=OFF compiles every source the plain
# way (docs/ARCHITECTURE.md "Build" has the numbers).
option(NIBBLE_PCH "Precompile torch's headers once per torch-using library (faster builds)" ON)
function(nibble_precompile_torch target header)
  if(NOT NIBBLE_PCH)
    return()
  endif()
  get_target_property(sources ${target} SOURCES)
  get_target_property(source_dir ${target} SOURCE_DIR)
  set(paths "")
  foreach(source IN LISTS sources)
    if(source MATCHES "^\\$<" OR NOT source MATCHES "\\.cpp$")
      continue()  # $<TARGET_OBJECTS:...> of other targets; CUDA sources have no PCH
    endif()
    cmake_path(ABSOLUTE_PATH source BASE_DIRECTORY ${source_dir} OUTPUT_VARIABLE path)
    list(APPEND paths ${path})
  endforeach()
  execute_process(
    COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/cmake/torch_includers.py ${PROJECT_SOURCE_DIR} ${paths}
    OUTPUT_VARIABLE includers OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  string(REPLACE "\n" ";" includers "${includers}")
  set(torch_free ${paths})
  list(REMOVE_ITEM torch_free ${includers})
  if(torch_free)
    set_source_files_properties(${torch_free} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  endif()
  target_precompile_headers(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${header}>")
endfunction()
