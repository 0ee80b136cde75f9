/* healthbridge pause: the sandbox process of a pod. Sleeps until SIGTERM or SIGINT
 * and reaps any child it inherits as PID 1, so zombies never pile up. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        puts("healthbridge-pause 1");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "healthbridge-pause: not PID 1, still sleeping until SIGTERM/SIGINT\n");
    }
    struct sigaction terminate = {0};
    terminate.sa_handler = on_terminate;
    sigemptyset(&terminate.sa_mask);
    struct sigaction child = {0};
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigemptyset(&child.sa_mask);
    if (sigaction(SIGTERM, &terminate, NULL) < 0 || sigaction(SIGINT, &terminate, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("healthbridge-pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
