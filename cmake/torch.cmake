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

