/* The pod sandbox's process: sleeps until told to stop. Built statically by
 * real-node.sh into the local pause image, so containerd needs no registry. */
#include <signal.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;) {
        pause();
    }
}
