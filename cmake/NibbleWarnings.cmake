# nibble_set_warnings(TARGET): the project's warning flags, per target.
function(nibble_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow)
  if(NIBBLE_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(NIBBLE_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${NIBBLE_SANITIZE}
                           -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${NIBBLE_SANITIZE})
  endif()
endfunction()
