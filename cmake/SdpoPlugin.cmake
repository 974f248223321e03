# sdpo_add_plugin(<name> SOURCES <files...> [LIBRARIES <libs...>])
#
# Creates target plugin_<name>, written as plugins/sdpo_<name>.so.
#
# One plugin = one MODULE library loaded by the host through Boost.DLL. Built with hidden
# visibility (only the two SDPO_DECLARE_PLUGIN aliases are exported) and as one unity unit, so
# each plugin pays the libtorch header cost once.
function(sdpo_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(target plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE sdpo::framework sdpo_warnings ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "sdpo_${name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    UNITY_BUILD ON
    LIBRARY_OUTPUT_DIRECTORY ${SDPO_PLUGIN_DIR})
  set_property(GLOBAL APPEND PROPERTY SDPO_PLUGINS ${target})
endfunction()
