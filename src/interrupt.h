/* Ctrl-C for the command line: a SIGINT handler that only raises a flag,
 * which the C core's waits (http.c's transfers, lua_util.c's sleep) read to
 * stop at once instead of running a transfer to its end.  The SDK never
 * installs it: only the `kinot` CLI asks for it (kinot.core.catch_interrupt),
 * so inside nginx or a user's script the flag is never raised and nothing
 * changes. */
#ifndef KINOT_INTERRUPT_H
#define KINOT_INTERRUPT_H
#include <signal.h>

/* installs the handler (SA_RESETHAND: a second Ctrl-C, before the first is
 * acted on, gets the default action and ends the process at once) and
 * lowers the flag; *old receives the action it replaced.  0, or -1 (errno) */
int kn_interrupt_catch(struct sigaction *old);

/* puts back what kn_interrupt_catch replaced and lowers the flag */
int kn_interrupt_release(const struct sigaction *old);

/* nonzero once SIGINT came under the handler */
int kn_interrupted(void);

/* ends the process of SIGINT (its default action), as a program Ctrl-C
 * stopped should once it has cleaned up: the shell then stops a script's
 * loop around it too (an exit(130) reads as "handled, go on") */
void kn_interrupt_die(void);

#endif
