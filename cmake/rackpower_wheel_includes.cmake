# The ROS 2 message wheels on PyPI export `<pkg>::<pkg>__rosidl_generator_py` targets whose
# include directories point at the wheel builder's Python (/opt/python/...). On a machine without
# that path CMake refuses to generate. This file rewrites such include directories to this
# machine's Python and NumPy headers. It only touches a target whose include directory does not
# exist, so a regular ROS 2 installation is left as it is.

function(rackpower_fix_wheel_python_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  set(_fixed "")
  foreach(_target IN LISTS _targets)
    if(NOT _target MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_missing FALSE)
    foreach(_dir IN LISTS _dirs)
      if(NOT _dir MATCHES "^\\$<" AND NOT EXISTS "${_dir}")
        set(_missing TRUE)
      endif()
    endforeach()
    if(_missing)
      set_target_properties(${_target} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
      list(APPEND _fixed ${_target})
    endif()
  endforeach()
  if(_fixed)
    list(LENGTH _fixed _count)
    message(STATUS "rackpower: pointed ${_count} wheel-built Python targets at this machine's "
      "Python headers (${Python3_INCLUDE_DIRS})")
  endif()
endfunction()

# When the Python prefix (a venv) lies inside the source tree, as `.venv` does for `colcon build`
# run on the checkout, CMake refuses to export our own generator_py target with include
# directories under the source directory. Those headers are only needed to build it, so keep
# them out of the exported interface.
function(rackpower_keep_source_includes_private target)
  if(NOT TARGET ${target})
    return()
  endif()
  get_target_property(_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    return()
  endif()
  set(_new "")
  foreach(_dir IN LISTS _dirs)
    string(FIND "${_dir}" "${CMAKE_SOURCE_DIR}/" _pos)
    if(_pos EQUAL 0 AND NOT _dir MATCHES "^\\$<")
      list(APPEND _new "$<BUILD_INTERFACE:${_dir}>")
    else()
      list(APPEND _new "${_dir}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
endfunction()

function(rackpower_fix_python_includes)
  rackpower_fix_wheel_python_includes()
  rackpower_keep_source_includes_private(${PROJECT_NAME}__rosidl_generator_py)
endfunction()

# Run once every dependency has been imported, i.e. at the end of the top-level CMakeLists.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL rackpower_fix_python_includes)
