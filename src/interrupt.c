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
    /* no SA_RESTART: a blocking poll or sleep returns EINTR and looks at
     * the flag; SA_RESETHAND: a second Ctrl-C is the default action */
    sa.sa_flags = SA_RESETHAND;
    interrupted = 0;
    return sigaction(SIGINT, &sa, old);
}

int kn_interrupt_release(const struct sigaction *old) {
    int rc = sigaction(SIGINT, old, NULL);
    interrupted = 0;
    return rc;
}

int kn_interrupted(void) { return interrupted != 0; }
