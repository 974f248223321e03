# sdpo_add_plugin(<name> SOURCES <files...> [LIBRARIES <libs...>])
#
# Creates target plugin_<name>, written as sdpo_<name>.so into build/plugins in the framework's
# own build, and into the top of the calling project's build folder (${CMAKE_BINARY_DIR}, the
# folder to put on SDPO_PLUGIN_PATH) out of tree. `cmake --install` copies it to
# <prefix>/lib/sdpo/plugins, the folder an installed `sdpo` loads by default.
#
# One plugin = one MODULE library loaded by the host through Boost.DLL. Built with hidden
# visibility (only the two SDPO_DECLARE_PLUGIN aliases are exported) and as one unity unit, so
# each plugin pays the libtorch header cost once.
#
# The same file serves the framework's build (included by the top-level CMakeLists.txt) and
# out-of-tree plugins (included by the installed sdpoConfig.cmake, after sdpo::sdk exists).
function(sdpo_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "sdpo_add_plugin(${name}): SOURCES <files...> is required")
  endif()
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "sdpo_add_plugin(${name}): unexpected arguments ${ARG_UNPARSED_ARGUMENTS} "
                        "(expected SOURCES <files...> [LIBRARIES <libs...>])")
  endif()
  set(target plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE sdpo::sdk ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "sdpo_${name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    UNITY_BUILD ON)
  # The run path is the same in the build folder and once installed (no rewrite at install time,
  # which would leave CMake's padding, an empty entry that means the working directory, in the
  # build tree): libsdpo_sdk.so two folders up from <prefix>/lib/sdpo/plugins, and every library
  # linked from outside the project (the installed libsdpo_sdk.so for an out-of-tree plugin, a CUDA
  # libtorch, HDF5's folder) where it was linked from.
  set(rpath "$ORIGIN/../..")
  if(TARGET sdpo_sdk)  # the framework's own build: build/plugins next to build/lib
    file(RELATIVE_PATH to_lib ${SDPO_PLUGIN_DIR} ${CMAKE_LIBRARY_OUTPUT_DIRECTORY})
    list(PREPEND rpath "$ORIGIN/${to_lib}")
    target_link_libraries(${target} PRIVATE sdpo_warnings)
    set(output_dir ${SDPO_PLUGIN_DIR})
  else()
    set(output_dir ${CMAKE_BINARY_DIR})
  endif()
  set_target_properties(${target} PROPERTIES
    LIBRARY_OUTPUT_DIRECTORY ${output_dir}
    BUILD_WITH_INSTALL_RPATH ON
    INSTALL_RPATH "${rpath}"
    INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS ${target} LIBRARY DESTINATION lib/sdpo/plugins)
  set_property(GLOBAL APPEND PROPERTY SDPO_PLUGINS ${target})
endfunction()
