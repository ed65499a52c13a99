/*
 * pty-run: run a command on a new pseudo-terminal (its controlling terminal, as a login shell
 * has) and drive it like a person at the keyboard. For rig checks of lkvm's console (raw
 * terminal, Ctrl-C to the guest, Ctrl-A x) that a pipe cannot exercise. L1 has no `script`.
 *
 *   pty-run [-t SECONDS] STEP... -- CMD [ARGS...]
 *
 * STEPs, in order:  expect:TEXT  wait until TEXT appears in the output (after the last match)
 *                   send:TEXT    type TEXT (escapes: \r \n \\ \xHH)
 * The whole run is bounded by -t SECONDS (default 300); the bound is a safety net, never a
 * measurement. Everything the command prints is copied to stdout. At the end, one line each:
 *   PTY-STEP-FAILED <step>         a step that timed out or the command ended before it
 *   PTY-EXIT status=N | signal=N   how the command ended (killed after the steps failed)
 *   PTY-TERMIOS restored | changed lflag=.. iflag=..   the terminal settings after the command
 *                                  ended, against those it started with
 * Exit status: 0 when every step matched, 1 otherwise, 2 for a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static char *output;
static size_t output_len, output_cap, matched_to;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t unescape(const char *in, char *out) {
    size_t n = 0;
    for (; *in; ++in) {
        if (*in != '\\' || !in[1]) { out[n++] = *in; continue; }
        ++in;
        if (*in == 'r') out[n++] = '\r';
        else if (*in == 'n') out[n++] = '\n';
        else if (*in == 'x' && in[1] && in[2]) {
            char hex[3] = {in[1], in[2], 0};
            out[n++] = (char)strtol(hex, NULL, 16);
            in += 2;
        } else out[n++] = *in;
    }
    return n;
}

/* Reads what the command printed within `timeout_ms`: 1 data, 2 nothing yet, 0 at EOF (every
 * slave descriptor of the command is closed). */
static int pump(int master, int timeout_ms) {
    struct pollfd p = {.fd = master, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0 || (r < 0 && errno == EINTR)) return 2;
    if (r < 0) return 0;
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) return 0; /* EIO: every slave fd is closed */
    if (output_len + (size_t)n + 1 > output_cap) {
        output_cap = (output_len + (size_t)n + 1) * 2;
        output = realloc(output, output_cap);
        if (!output) { perror("pty-run: realloc"); exit(2); }
    }
    memcpy(output + output_len, buf, (size_t)n);
    output_len += (size_t)n;
    output[output_len] = 0;
    fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
    return 1;
}

/* The first occurrence of `text` at or after `from`, as an end offset; 0 if none. */
static size_t find_from(size_t from, const char *text) {
    size_t len = strlen(text);
    for (size_t i = from; len && i + len <= output_len; ++i)
        if (memcmp(output + i, text, len) == 0) return i + len;
    return 0;
}

int main(int argc, char **argv) {
    double limit = 300;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-t") == 0) { limit = atof(argv[2]); first = 3; }
    int dashes = first;
    while (dashes < argc && strcmp(argv[dashes], "--") != 0) ++dashes;
    if (dashes + 1 >= argc) {
        fprintf(stderr, "usage: pty-run [-t SECONDS] expect:TEXT|send:TEXT... -- CMD [ARGS...]\n");
        return 2;
    }
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) { perror("pty-run: pty"); return 2; }
    const char *slave_name = ptsname(master);
    /* Our own slave descriptor keeps the terminal alive to compare its settings at the end. */
    int slave = open(slave_name, O_RDWR | O_NOCTTY);
    struct termios before, after;
    if (slave < 0 || tcgetattr(slave, &before) != 0) { perror("pty-run: slave"); return 2; }
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    ioctl(master, TIOCSWINSZ, &ws);

    pid_t child = fork();
    if (child < 0) { perror("pty-run: fork"); return 2; }
    if (child == 0) {
        setsid();
        int tty = open(slave_name, O_RDWR); /* the first terminal a session leader opens is its own */
        if (tty < 0 || ioctl(tty, TIOCSCTTY, 0) != 0) { perror("pty-run: controlling terminal"); _exit(127); }
        dup2(tty, 0); dup2(tty, 1); dup2(tty, 2);
        if (tty > 2) close(tty);
        close(master); close(slave);
        execvp(argv[dashes + 1], argv + dashes + 1);
        perror("pty-run: exec");
        _exit(127);
    }

    const double deadline = now() + limit;
    int ok = 1, open_pty = 1;
    for (int i = first; i < dashes && ok; ++i) {
        const char *step = argv[i];
        if (strncmp(step, "send:", 5) == 0) {
            char *bytes = malloc(strlen(step) + 1);
            size_t n = unescape(step + 5, bytes);
            if (write(master, bytes, n) != (ssize_t)n) ok = 0;
            free(bytes);
        } else if (strncmp(step, "expect:", 7) == 0) {
            size_t end;
            while (!(end = find_from(matched_to, step + 7)) && open_pty && now() < deadline)
                open_pty = pump(master, 200);
            if (end) matched_to = end;
            else ok = 0;
        } else {
            fprintf(stderr, "pty-run: unknown step '%s'\n", step);
            ok = 0;
        }
        if (!ok) printf("\nPTY-STEP-FAILED %s\n", step);
    }
    /* Let the command end by itself (it was told to), then stop it if the steps failed. */
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(child, &status, WNOHANG)) == 0 && now() < deadline) {
        if (open_pty) open_pty = pump(master, 200);
        else usleep(100000);
        if (!ok) { kill(child, SIGTERM); }
    }
    if (done == 0) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        ok = 0;
    }
    while (open_pty && pump(master, 0) == 1 && output_len < (64u << 20)) {
    }
    if (WIFEXITED(status)) printf("\nPTY-EXIT status=%d\n", WEXITSTATUS(status));
    else printf("\nPTY-EXIT signal=%d\n", WTERMSIG(status));
    if (tcgetattr(slave, &after) != 0) printf("PTY-TERMIOS unknown (%s)\n", strerror(errno));
    else if (after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag && after.c_oflag == before.c_oflag &&
             memcmp(after.c_cc, before.c_cc, sizeof after.c_cc) == 0)
        printf("PTY-TERMIOS restored\n");
    else
        printf("PTY-TERMIOS changed lflag=%#x (was %#x) iflag=%#x (was %#x)\n", (unsigned)after.c_lflag,
               (unsigned)before.c_lflag, (unsigned)after.c_iflag, (unsigned)before.c_iflag);
    return ok ? 0 : 1;
}
