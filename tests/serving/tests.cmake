# End-to-end tests of `vgen serve` from Python: the official openai SDK, curl, raw HTTP.
# Each script starts its own server on 127.0.0.1 (free port, temporary media dir) with the
# tiny fixture model. They exit 77 (reported as skipped) when python3's `openai` package,
# curl or ffprobe is missing.
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  message(STATUS "python3 not found: the serving end-to-end tests are not registered")
  return()
endif()

foreach(script openai_sdk http_errors restart load hardening)
  add_test(NAME serving_${script}
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/serving/test_${script}.py
                   $<TARGET_FILE:vgen> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/wan21_t2v_tiny)
  # One at a time: they time cancellations and shutdowns on a shared CPU.
  set_tests_properties(serving_${script} PROPERTIES
    SKIP_RETURN_CODE 77 TIMEOUT 600 RESOURCE_LOCK vgen_serving LABELS serving)
endforeach()

# Image-to-video on the tiny Wan2.1 I2V fixture (an image is required there).
add_test(NAME serving_i2v
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/serving/test_i2v.py
                 $<TARGET_FILE:vgen> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/wan21_i2v_tiny)
set_tests_properties(serving_i2v PROPERTIES
  SKIP_RETURN_CODE 77 TIMEOUT 600 RESOURCE_LOCK vgen_serving LABELS serving)

# FLUX.1 through the OpenAI SDK: images.generate on flux_dev_tiny, images.edit on
# flux_kontext_tiny (pixels against diffusers' references in fixtures/flux_serving_ref).
add_test(NAME serving_flux_sdk
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/serving/test_flux_sdk.py
                 $<TARGET_FILE:vgen> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
set_tests_properties(serving_flux_sdk PROPERTIES
  SKIP_RETURN_CODE 77 TIMEOUT 600 RESOURCE_LOCK vgen_serving LABELS serving)
