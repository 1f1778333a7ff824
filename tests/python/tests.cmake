# The Python package's tests (tests/python, pytest) against the extension of this build
# (<build>/python/vgen): registered when the extension is built (VGEN_WITH_PYTHON). Exits 77
# (skipped) when pytest is missing (scripts/test.sh installs it: scripts/test-requirements.txt).
add_test(NAME python
         COMMAND ${Python_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/python/run_pytest.py
                 ${CMAKE_CURRENT_SOURCE_DIR}/python -q)
set_tests_properties(python PROPERTIES
  ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/python;VGEN_BINARY=$<TARGET_FILE:vgen>;VGEN_FIXTURES_DIR=${CMAKE_CURRENT_SOURCE_DIR}/fixtures"
  SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS python)
