# libFuzzer targets (tests/fuzz/fuzz_*.c), included by the top CMakeLists.txt when SX_FUZZ is ON.
# CMake cannot switch compilers inside a project, so the whole tree is built with clang:
#   CC=clang cmake -S . -B build-fuzz -DSX_FUZZ=ON && cmake --build build-fuzz
# or tools/fuzz.sh, which does that and runs every target for a while.
# Every object gets the fuzzer's coverage instrumentation plus ASan and UBSan; only the
# fuzz_* executables link libFuzzer's main.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "SX_FUZZ needs clang: CC=clang cmake -DSX_FUZZ=ON -B build-fuzz")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                    -fno-sanitize-recover=undefined -Wno-error)
add_link_options(-fsanitize=address,undefined)
set(SX_FUZZ_SECONDS 15 CACHE STRING "seconds each fuzz target runs under ctest")

function(sx_fuzz_targets)
  file(GLOB srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
  foreach(src ${srcs})
    get_filename_component(name ${src} NAME_WE)
    string(REPLACE "fuzz_" "" short ${name})
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE sxcore)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    # New inputs go to the build tree; the checked-in seeds are read only.
    set(work ${PROJECT_BINARY_DIR}/fuzz/${short})
    file(MAKE_DIRECTORY ${work}/corpus ${work}/artifacts)
    set(dict ${PROJECT_SOURCE_DIR}/tests/fuzz/${short}.dict)
    set(args -max_total_time=${SX_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
             -artifact_prefix=${work}/artifacts/)
    if(EXISTS ${dict})
      list(APPEND args -dict=${dict})
    endif()
    set(seeds ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${short})
    if(EXISTS ${PROJECT_SOURCE_DIR}/tests/fuzz/regressions/${short})
      list(APPEND seeds ${PROJECT_SOURCE_DIR}/tests/fuzz/regressions/${short})
    endif()
    add_test(NAME fuzz/${short} COMMAND ${name} ${args} ${work}/corpus ${seeds})
    set_tests_properties(fuzz/${short} PROPERTIES TIMEOUT 600
      ENVIRONMENT "SX_SOURCE_DIR=${PROJECT_SOURCE_DIR};ASAN_OPTIONS=detect_leaks=1;LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/fuzz/lsan.supp")
  endforeach()
endfunction()
cmake_language(DEFER CALL sx_fuzz_targets)
