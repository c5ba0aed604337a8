#-----------------------------------------------------------------------------
# clinseg_add_scripted_module(NAME <name> [PACKAGE] SCRIPTS <file>... [RESOURCES <file>...])
#
# Ships Python files with the extension through Slicer's slicerMacroBuildScriptedModule: each listed file
# (path relative to the calling folder, kept as is) is copied and byte-compiled into
# ${Slicer_QTSCRIPTEDMODULES_LIB_DIR} of the build tree and installed into
# ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}, which Slicer puts on sys.path.
#
# A module (<name>.py defines the classes Slicer looks for) also gets Slicer's generic module tests and
# its self-test (<name>Test in <name>.py) as a ctest; the self-test also runs from the module panel
# ("Reload and Test") and from Testing/run_selftests.py.
# PACKAGE: a plain package with no module class (clinseg, ClinicalSegLib), so no module tests.
#
# A macro rather than a function: Slicer's macros then run in the calling folder's scope, exactly as if
# they were called there.
macro(clinseg_add_scripted_module)
  cmake_parse_arguments(_clinseg_module "PACKAGE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(_clinseg_module_UNPARSED_ARGUMENTS OR NOT _clinseg_module_NAME OR NOT _clinseg_module_SCRIPTS)
    message(FATAL_ERROR "clinseg_add_scripted_module: NAME and SCRIPTS are required; unexpected arguments:"
      " ${_clinseg_module_UNPARSED_ARGUMENTS}")
  endif()
  set(_clinseg_module_generic_tests WITH_GENERIC_TESTS)
  if(_clinseg_module_PACKAGE)
    set(_clinseg_module_generic_tests)
  endif()
  slicerMacroBuildScriptedModule(
    NAME ${_clinseg_module_NAME}
    SCRIPTS ${_clinseg_module_SCRIPTS}
    RESOURCES ${_clinseg_module_RESOURCES}
    ${_clinseg_module_generic_tests}
    )
  if(BUILD_TESTING AND NOT _clinseg_module_PACKAGE)
    slicer_add_python_unittest(SCRIPT ${_clinseg_module_NAME}.py)
  endif()
endmacro()
