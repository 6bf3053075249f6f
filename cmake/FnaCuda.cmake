# CUDA part of the build: architectures, CUTLASS/CuTe headers, generated kernel instances.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  # CMake 3.25 predates nvcc 13: tell it how nvcc spells C++20.
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set_target_properties(fna PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
# CMake 3.25 does not know the "90a" architecture spelling, so fna passes -gencode itself: every
# CUDA source gets all FNA_CUDA_ARCHS, except sources whose path names sm90 (Hopper-only
# instructions), which get sm_90a alone.
set_target_properties(fna PROPERTIES CUDA_ARCHITECTURES OFF)
set(_fna_gencode_all "")
foreach(_a ${FNA_CUDA_ARCHS})
  list(APPEND _fna_gencode_all "-gencode=arch=compute_${_a},code=sm_${_a}")
endforeach()
set(_fna_gencode_sm90a "-gencode=arch=compute_90a,code=sm_90a")

# CUTLASS 4.2 headers come from the pinned PyPI package nvidia-cutlass==4.2.0.0
# (cutlass_library/source/include). FNA_CUTLASS_INCLUDE_DIR overrides; .cutlass/include is the
# folder scripts/device-check carries to the GPU machine.
if(NOT FNA_CUTLASS_INCLUDE_DIR)
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_FOUND)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c
        "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
      OUTPUT_VARIABLE _fna_cutlass OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  if(NOT _fna_cutlass OR NOT EXISTS "${_fna_cutlass}/cute")
    set(_fna_cutlass "${PROJECT_SOURCE_DIR}/.cutlass/include")
  endif()
  set(FNA_CUTLASS_INCLUDE_DIR "${_fna_cutlass}" CACHE PATH "CUTLASS/CuTe include directory")
endif()
if(NOT EXISTS "${FNA_CUTLASS_INCLUDE_DIR}/cute/tensor.hpp")
  message(FATAL_ERROR "CUTLASS/CuTe headers not found at '${FNA_CUTLASS_INCLUDE_DIR}': "
                      "pip install nvidia-cutlass==4.2.0.0 or set FNA_CUTLASS_INCLUDE_DIR")
endif()

# Generated instances: src/cuda/instances/<family>_<fwd|bwd>_hdim<D>_<dtype>_sm<arch>.cu, one
# explicit instantiation per translation unit (tools/generate_instances.py writes them). Only
# those matching FNA_HEAD_DIMS, FNA_DTYPES and FNA_CUDA_ARCHS are compiled.
file(GLOB _fna_instances CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/cuda/instances/*.cu)
set(_fna_has_sm90a OFF)
foreach(_a ${FNA_CUDA_ARCHS})
  if(_a MATCHES "^90a")
    set(_fna_has_sm90a ON)
  endif()
endforeach()
set(FNA_INSTANCE_SOURCES "")
foreach(_f ${_fna_instances})
  get_filename_component(_n ${_f} NAME_WE)
  if(NOT _n MATCHES "_hdim([0-9]+)_(fp32|fp16|bf16)_sm([0-9]+a?)$")
    message(FATAL_ERROR "instance file name '${_n}' does not spell hdim, dtype and arch")
  endif()
  set(_hd ${CMAKE_MATCH_1})
  set(_dt ${CMAKE_MATCH_2})
  set(_arch ${CMAKE_MATCH_3})
  if(NOT _hd IN_LIST FNA_HEAD_DIMS)
    continue()
  endif()
  if(NOT _dt STREQUAL "fp32" AND NOT _dt IN_LIST FNA_DTYPES)
    continue()
  endif()
  if(_arch STREQUAL "90a" AND NOT _fna_has_sm90a)
    continue()
  endif()
  list(APPEND FNA_INSTANCE_SOURCES ${_f})
endforeach()

file(GLOB_RECURSE _fna_cuda_sources CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/src/cuda/*.cu ${PROJECT_SOURCE_DIR}/src/cuda/*.cpp)
list(FILTER _fna_cuda_sources EXCLUDE REGEX "/src/cuda/instances/")
target_sources(fna PRIVATE ${_fna_cuda_sources} ${FNA_INSTANCE_SOURCES})
foreach(_f ${_fna_cuda_sources} ${FNA_INSTANCE_SOURCES})
  if(NOT _f MATCHES "\\.cu$")
    continue()
  endif()
  if(_f MATCHES "sm90")
    set_source_files_properties(${_f} PROPERTIES COMPILE_OPTIONS "${_fna_gencode_sm90a}")
  else()
    set_source_files_properties(${_f} PROPERTIES COMPILE_OPTIONS "${_fna_gencode_all}")
  endif()
endforeach()
target_include_directories(fna PRIVATE ${FNA_CUTLASS_INCLUDE_DIR})
target_link_libraries(fna PUBLIC CUDA::cudart)

# What was compiled, for "not compiled: enable with ..." errors.
# One macro per head dim (FNA_BUILT_HDIM_<D>): nvcc splits -D values at commas, so no lists.
set(_fna_dt_defs "")
foreach(_hd ${FNA_HEAD_DIMS})
  list(APPEND _fna_dt_defs FNA_BUILT_HDIM_${_hd}=1)
endforeach()
foreach(_dt ${FNA_DTYPES})
  string(TOUPPER ${_dt} _DT)
  list(APPEND _fna_dt_defs FNA_BUILT_${_DT}=1)
endforeach()
target_compile_definitions(fna PRIVATE FNA_WITH_CUDA=1 ${_fna_dt_defs} $<$<BOOL:${_fna_has_sm90a}>:FNA_BUILT_SM90A=1>)
target_compile_options(fna PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --expt-extended-lambda -lineinfo>)
message(STATUS "fna CUDA: archs=${FNA_CUDA_ARCHS} head_dims=${FNA_HEAD_DIMS} dtypes=${FNA_DTYPES}")
