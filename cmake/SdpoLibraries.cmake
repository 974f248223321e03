# The framework build's static libraries: code that plugins share (the model layer, models/) or
# that the tests and benchmarks call directly (an algorithm's pure loss, the toy GenEval checks),
# each compiled once.
#
# sdpo_add_static_library(<target> SOURCES <files...> [INCLUDE <dir>] [LIBRARIES <libs...>])
#   A static library linked into plugins: each plugin keeps a private copy, so it is built
#   position-independent and hidden like the plugins themselves, as one unity unit. INCLUDE is its
#   public include root. It is also linked into the test executable and the benchmarks (the
#   SDPO_TEST_LIBRARIES property).
#
# sdpo_add_model_library(<name> SOURCES <files...> [LIBRARIES <libs...>])
#   The library sdpo_models_<name> of models/<name>/: headers in include/sdpo/models/<name>/,
#   included by that path (`#include "sdpo/models/<name>/<file>.h"`), sources in src/.
#
# Used only inside the framework's build: out-of-tree plugins link sdpo::sdk
# (docs/writing-a-plugin.md).
function(sdpo_add_static_library target)
  cmake_parse_arguments(ARG "" "INCLUDE" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "sdpo_add_static_library(${target}): SOURCES <files...> is required")
  endif()
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "sdpo_add_static_library(${target}): unexpected arguments ${ARG_UNPARSED_ARGUMENTS} "
                        "(expected SOURCES <files...> [INCLUDE <dir>] [LIBRARIES <libs...>])")
  endif()
  add_library(${target} STATIC ${ARG_SOURCES})
  if(ARG_INCLUDE)
    target_include_directories(${target} PUBLIC ${ARG_INCLUDE})
  endif()
  target_link_libraries(${target} PUBLIC sdpo::sdk ${ARG_LIBRARIES} PRIVATE sdpo_warnings)
  set_target_properties(${target} PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    UNITY_BUILD ON)
  set_property(GLOBAL APPEND PROPERTY SDPO_TEST_LIBRARIES ${target})
endfunction()

function(sdpo_add_model_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "sdpo_add_model_library(${name}): unexpected arguments ${ARG_UNPARSED_ARGUMENTS} "
                        "(expected SOURCES <files...> [LIBRARIES <libs...>])")
  endif()
  sdpo_add_static_library(sdpo_models_${name} SOURCES ${ARG_SOURCES} INCLUDE ${CMAKE_CURRENT_SOURCE_DIR}/include
                          LIBRARIES ${ARG_LIBRARIES})
endfunction()
