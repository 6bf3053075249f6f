# Runs one fna-bench command line and checks its exit status and output (a CTest driver):
#   cmake -DBENCH=<fna-bench> -DARGS="a;b;c" -DEXPECT=ok|fail -DREGEX=<must match stdout+stderr>
#         [-DCOUNT=<exact number of REGEX matches>] -P expect.cmake
execute_process(COMMAND ${BENCH} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
if(EXPECT STREQUAL "ok" AND NOT rc EQUAL 0)
  message(FATAL_ERROR "fna-bench ${ARGS}: exit ${rc}, expected 0:\n${out}")
elseif(EXPECT STREQUAL "fail" AND rc EQUAL 0)
  message(FATAL_ERROR "fna-bench ${ARGS}: exit 0, expected a failure:\n${out}")
endif()
string(REGEX MATCHALL "${REGEX}" hits "${out}")
list(LENGTH hits n)
if(n EQUAL 0)
  message(FATAL_ERROR "fna-bench ${ARGS}: output does not match '${REGEX}':\n${out}")
endif()
if(DEFINED COUNT AND NOT n EQUAL COUNT)
  message(FATAL_ERROR "fna-bench ${ARGS}: '${REGEX}' matched ${n} times, expected ${COUNT}:\n${out}")
endif()
