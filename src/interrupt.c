/* The SIGINT flag of the command line (interrupt.h). */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <string.h>
#include "interrupt.h"

/* The one piece of global mutable state outside what libcurl and OpenSSL
 * require: a signal handler can reach nothing else, and a volatile
 * sig_atomic_t is the one object POSIX lets it write (the accepted
 * exception to the house rule).  Only the handler raises it; only
 * kn_interrupt_catch / kn_interrupt_release lower it. */
static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

int kn_interrupt_catch(struct sigaction *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART, as lua.c's own handler (signal()) has it: a read of
     * stdin or a file goes on (an EINTR there would read as the input's
     * end: a batch from a part of its list).  poll(), nanosleep() are never
     * restarted (signal(7)): libcurl's wait and core.sleep see the EINTR
     * and look at the flag.  SA_RESETHAND: a second Ctrl-C is the default
     * action */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    interrupted = 0;
    return sigaction(SIGINT, &sa, old);
}

int kn_interrupt_release(const struct sigaction *old) {
    int rc = sigaction(SIGINT, old, NULL);
    interrupted = 0;
    return rc;
}

int kn_interrupted(void) { return interrupted != 0; }

void kn_interrupt_die(void) {
    struct sigaction sa;
    sigset_t set;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGINT);
}
