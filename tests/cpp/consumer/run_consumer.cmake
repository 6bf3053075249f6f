# CTest driver: the README's C++ example, the install tree and find_package(fna), tested together.
#   (a) installs the built fna into a fresh prefix (cmake --install),
#   (b) writes the README block between <!-- example:cpp begin --> and <!-- example:cpp end -->
#       to main.cpp next to consumer/CMakeLists.txt, configures and builds it against the prefix,
#   (c) runs it.
# Inputs (-D): FNA_BUILD_DIR, FNA_README, CONSUMER_DIR, WORK_DIR, CXX, GENERATOR.
cmake_minimum_required(VERSION 3.25)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out
                  WORKING_DIRECTORY "${WORK_DIR}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc}):\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/src")

# (a) install
run_step("cmake --install" "${CMAKE_COMMAND}" --install "${FNA_BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
if(NOT EXISTS "${WORK_DIR}/prefix/include/fna/fna.h")
  message(FATAL_ERROR "the install tree lacks include/fna/fna.h")
endif()

# (b) the README example
file(READ "${FNA_README}" readme)
set(begin_marker "<!-- example:cpp begin -->")
string(FIND "${readme}" "${begin_marker}" begin)
string(FIND "${readme}" "<!-- example:cpp end -->" end)
if(begin LESS 0 OR end LESS begin)
  message(FATAL_ERROR "${FNA_README} has no '${begin_marker}' ... '<!-- example:cpp end -->' block")
endif()
string(LENGTH "${begin_marker}" marker_length)
math(EXPR first "${begin} + ${marker_length}")
math(EXPR length "${end} - ${first}")
string(SUBSTRING "${readme}" ${first} ${length} block)
# The code is the fenced ```cpp block inside the markers.
if(NOT block MATCHES "```(cpp|c\\+\\+)\n(.*)\n```")
  message(FATAL_ERROR "the README example block holds no ```cpp fenced code:\n${block}")
endif()
file(WRITE "${WORK_DIR}/src/main.cpp" "${CMAKE_MATCH_2}\n")
configure_file("${CONSUMER_DIR}/CMakeLists.txt" "${WORK_DIR}/src/CMakeLists.txt" COPYONLY)

run_step("configuring the consumer" "${CMAKE_COMMAND}" -S src -B build -G "${GENERATOR}"
         "-DCMAKE_CXX_COMPILER=${CXX}" "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix"
         -DCMAKE_BUILD_TYPE=Release)
run_step("building the consumer" "${CMAKE_COMMAND}" --build build)

# (c) run it
run_step("running the README example" "${WORK_DIR}/build/consumer")
message(STATUS "README example output:\n${step_output}")
string(TOLOWER "${step_output}" lowered)
if(step_output STREQUAL "" OR lowered MATCHES "nan")
  message(FATAL_ERROR "the README example printed nothing or a NaN")
endif()
