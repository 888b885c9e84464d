# TesseraPlugin.cmake — tessera_add_plugin(): builds one Tessera plugin as a shared module
# with hidden visibility, exporting only its entry symbol, which the link checks is defined.
# Part of the installed SDK.
#
#   tessera_add_plugin(my_encoder SOURCES my_encoder.cpp [TORCH] [OUTPUT_NAME name]
#                      [OUTPUT_DIRECTORY dir] [LIBRARIES extra libs...])
# TORCH links LibTorch (find_package(Torch) first) for plugins written with plugin.hpp;
# leave it out for plugins in plain C that use only abi.h and DLPack.
function(tessera_add_plugin target)
  cmake_parse_arguments(ARG "TORCH" "OUTPUT_NAME;OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  add_library(${target} MODULE ${ARG_SOURCES})
  if(NOT ARG_OUTPUT_NAME)
    set(ARG_OUTPUT_NAME ${target})
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME ${ARG_OUTPUT_NAME}
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
  # Plugins never resolve symbols from the core: fail at link time, not at load time.
  # Export exactly one symbol, the entry (templates of std:: and c10:: types would
  # otherwise leak out with default visibility).
  set(_map ${CMAKE_BINARY_DIR}/tessera_plugin_exports.map)
  if(NOT EXISTS ${_map})
    file(WRITE ${_map} "{ global: tessera_plugin_entry; local: *; };\n")
  endif()
  # --require-defined: a plugin without the entry symbol fails to link, naming it, instead of
  # being found out when the core loads it.
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,--version-script=${_map}
                      -Wl,--require-defined=tessera_plugin_entry)
  target_link_libraries(${target} PRIVATE TesseraSDK::sdk ${ARG_LIBRARIES})
  if(ARG_TORCH)
    target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES})
    if(TORCH_CXX_FLAGS)
      separate_arguments(_tsr_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
      target_compile_options(${target} PRIVATE ${_tsr_torch_flags})
    endif()
  endif()
endfunction()
