/* kinot.simsignal: the signal handling of the CLI's long-running commands,
 * `kinot sim` in the foreground (lua/kinot/cli/sim.lua) and `kinot worker`
 * (lua/kinot/cli/worker.lua), a module of its own beside kinot.core: the
 * SDK never touches the process's signals. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include "lua_binding.h"

/* Lua cannot catch a signal, so `kinot sim` blocks INT/TERM/HUP before it
 * starts nginx (block_signals) and then waits for one of them, or for nginx
 * to go (wait_signal), to stop nginx however it is asked to.  A blocked
 * signal is queued even where the shell left it ignored. */
static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

/* block_signals() / block_signals(false): hold or release INT/TERM/HUP */
static int l_block_signals(lua_State *L) {
    sigset_t set;
    stop_signals(&set);
    if (sigprocmask(lua_isnoneornil(L, 1) || lua_toboolean(L, 1) ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL) != 0)
        return kn_fail(L, "sigprocmask failed");
    return 0;
}

/* wait_signal(pid[, seconds]) -> "SIGINT" | "SIGTERM" | "SIGHUP" | "exited",
 * or "timeout" once `seconds` have passed (the signals stay blocked then:
 * `kinot serve` does a little work between two waits); releases the
 * signals before returning anything else */
static int l_wait_signal(lua_State *L) {
    pid_t pid = (pid_t)kn_check_number(L, 1, "wait_signal's pid");
    double limit = lua_isnoneornil(L, 2) ? -1 : kn_check_number(L, 2, "wait_signal's seconds");
    sigset_t set;
    struct timespec tick = {0, 200000000};
    const char *what = "exited";
    double waited = 0;
    stop_signals(&set);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return kn_fail(L, "sigprocmask failed");
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGINT) { what = "SIGINT"; break; }
        if (sig == SIGTERM) { what = "SIGTERM"; break; }
        if (sig == SIGHUP) { what = "SIGHUP"; break; }
        if (kill(pid, 0) != 0 && errno == ESRCH) break;
        waited += 0.2;
        if (limit >= 0 && waited >= limit) {
            lua_pushstring(L, "timeout");
            return 1;
        }
    }
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    lua_pushstring(L, what);
    return 1;
}

/* `kinot worker` asks for a line of counts with SIGUSR1: held (blocked)
 * from the start, then taken between two reads of the stream, so that it
 * never ends the process nor interrupts a Redis call halfway. */
static int usr_signal(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (strcmp(name, "SIGUSR1") == 0) return SIGUSR1;
    if (strcmp(name, "SIGUSR2") == 0) return SIGUSR2;
    return kn_misuse(L, "simsignal: only SIGUSR1 or SIGUSR2 can be held (got %s)", name);
}

/* hold_signal(name): block SIGUSR1 or SIGUSR2; it waits, queued, for take_signal */
static int l_hold_signal(lua_State *L) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, usr_signal(L));
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return kn_fail(L, "sigprocmask failed");
    return 0;
}

/* take_signal(name) -> true if that held signal came since the last call (never waits) */
static int l_take_signal(lua_State *L) {
    sigset_t set;
    struct timespec none = {0, 0};
    int sig = usr_signal(L), got = 0;
    sigemptyset(&set);
    sigaddset(&set, sig);
    while (sigtimedwait(&set, NULL, &none) == sig) got = 1; /* several arrivals: one answer */
    lua_pushboolean(L, got);
    return 1;
}

int luaopen_kinot_simsignal(lua_State *L) {
    static const luaL_Reg funcs[] = {{"block_signals", l_block_signals}, {"wait_signal", l_wait_signal},
                                     {"hold_signal", l_hold_signal}, {"take_signal", l_take_signal}, {NULL, NULL}};
    kn_open_errors(L);
    luaL_newlib(L, funcs);
    return 1;
}
