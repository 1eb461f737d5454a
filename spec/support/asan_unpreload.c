/* make sanitize: preloaded after the ASan and UBSan runtimes into each Lua
 * process (build/asan/bin/lua5.4, build/asan/bin/luajit), it takes
 * LD_PRELOAD out of the process's environment once the runtimes are in, so
 * that what the process spawns (ps, nginx, openssl, redis-server, a shell)
 * runs without them: `ps` under a preloaded libasan never finishes.  A Lua
 * child started as lua5.4 or luajit finds the wrappers first in PATH and
 * runs under the sanitizers again. */
#include <stdlib.h>

__attribute__((constructor)) static void kinot_asan_unpreload(void)
{
    unsetenv("LD_PRELOAD");
}
