/* Small functions of kinot.core: digests and encodings (digest.h),
 * uuid, constant-time comparison, clocks, sleep, a durable append. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "lua_binding.h"
#include "digest.h"
#include "interrupt.h"

static int l_content_md5(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "the body", &n);
    char out[25];
    if (kn_content_md5(s, n, out)) return kn_fail(L, "MD5 failed");
    lua_pushlstring(L, out, 24);
    return 1;
}

static int l_md5_hex(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "md5_hex's argument", &n);
    unsigned char d[16];
    char hex[33];
    if (kn_md5(s, n, d)) return kn_fail(L, "MD5 failed");
    kn_hex_upper(d, 16, hex);
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* digest(alg, data[, key[, encoding]]) -> MD5 / SHA-1 / SHA-256 of data, or
 * its HMAC under key; encoding "hex" (upper case, the default), "base64"
 * or "raw".  For the callback sign rules (callback/rules.lua). */
static int l_digest(lua_State *L) {
    size_t n, kn = 0, len;
    const char *alg = kn_check_lstring(L, 1, "digest algorithm", NULL);
    const char *data = kn_check_lstring(L, 2, "digest data", &n);
    const char *key = lua_isnoneornil(L, 3) ? NULL : kn_check_lstring(L, 3, "digest key", &kn);
    const char *enc = lua_isnoneornil(L, 4) ? "hex" : kn_check_lstring(L, 4, "digest encoding", NULL);
    unsigned char d[32];
    char out[65];
    if (strcmp(enc, "hex") && strcmp(enc, "base64") && strcmp(enc, "raw"))
        return kn_misuse(L, "digest encoding must be hex, base64 or raw (got %s)", enc);
    if (strcmp(alg, "md5") && strcmp(alg, "sha1") && strcmp(alg, "sha256"))
        return kn_misuse(L, "digest algorithm must be md5, sha1 or sha256 (got %s)", alg);
    if (!(len = kn_digest(alg, key, kn, data, n, d))) return kn_fail(L, "%s digest failed", alg);
    if (enc[0] == 'r') {
        lua_pushlstring(L, (const char *)d, len);
    } else if (enc[0] == 'h') {
        kn_hex_upper(d, len, out);
        lua_pushlstring(L, out, 2 * len);
    } else {
        lua_pushlstring(L, out, kn_base64(d, len, out));
    }
    return 1;
}


static int l_uuid(lua_State *L) {
    char u[37];
    if (kn_uuid4(u)) return kn_fail(L, "OpenSSL's random generator failed");
    lua_pushlstring(L, u, 36);
    return 1;
}

static int l_ct_equal(lua_State *L) {
    size_t a, b;
    const char *x = kn_check_lstring(L, 1, "ct_equal's first argument", &a);
    const char *y = kn_check_lstring(L, 2, "ct_equal's second argument", &b);
    lua_pushboolean(L, kn_ct_equal(x, a, y, b));
    return 1;
}

static int l_now_ms(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + (lua_Integer)(ts.tv_nsec / 1000000));
    return 1;
}

static int l_monotonic(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_sleep(lua_State *L) {
    double s = kn_check_number(L, 1, "sleep's seconds");
    struct timespec ts;
    if (!(s > 0)) return 0;
    if (s > 1e9) kn_misuse(L, "sleep's seconds must be finite");
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0) {
        if (errno == EINTR && kn_interrupted()) return kn_interrupt_error(L);
    }
    return 0;
}

/* ------------------------------------------------------------ Ctrl-C
 * The CLI's (interrupt.h): catch_interrupt() -> token, release_interrupt(token),
 * interrupted() -> boolean.  The SDK itself never calls them. */
#define INTERRUPT_MT "kinot.core.interrupt_catch"

static int l_catch_interrupt(lua_State *L) {
    struct sigaction *old = lua_newuserdata(L, sizeof *old);
    memset(old, 0, sizeof *old);
    luaL_getmetatable(L, INTERRUPT_MT);
    lua_setmetatable(L, -2);
    if (kn_interrupt_catch(old) != 0) return kn_fail(L, "sigaction(SIGINT) failed: %s", strerror(errno));
    return 1;
}

static int l_release_interrupt(lua_State *L) {
    const struct sigaction *old = luaL_testudata(L, 1, INTERRUPT_MT);
    if (!old) return kn_misuse(L, "release_interrupt expects what catch_interrupt returned");
    if (kn_interrupt_release(old) != 0) return kn_fail(L, "sigaction(SIGINT) failed: %s", strerror(errno));
    return 0;
}

/* die_of_interrupt(): the process ends of SIGINT (stdio flushed first by
 * the caller: nothing else is) */
static int l_die_of_interrupt(lua_State *L) {
    kn_interrupt_die();
    return kn_fail(L, "SIGINT did not end the process");
}

static int l_interrupted(lua_State *L) {
    lua_pushboolean(L, kn_interrupted());
    return 1;
}

/* nil, "what: why" (why: strerror(err) when NULL): the failure of a file
 * call, as append_durable, lock_file and truncate_file answer it */
static int file_error(lua_State *L, const char *what, const char *why, int err) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, why ? why : strerror(err));
    return 2;
}

/* the descriptor lock_file returned, argument i of fname */
static int locked_fd(lua_State *L, int i, const char *fname) {
    lua_Integer fd = luaL_checkinteger(L, i);
    if (fd < 0 || fd > 1 << 30) kn_misuse(L, "%s expects what lock_file returned", fname);
    return (int)fd;
}

/* append_durable(path, data[, sync]) -> true | nil, message: data appended
 * to the file (created 0600 if absent) with write(2), so that it outlives
 * the process (a SIGKILL) once this returns, and on the disk (fsync) unless
 * sync is false, so that it outlives a power cut too (the batch journal,
 * batch/journal.lua).  Nothing is kept open between calls: no descriptor
 * to leak when a batch is abandoned. */
static int l_append_durable(lua_State *L) {
    size_t n, done = 0;
    const char *path = kn_check_lstring(L, 1, "append_durable's path", NULL);
    const char *data = kn_check_lstring(L, 2, "append_durable's data", &n);
    int sync = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
    int fd, saved;
    do {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) goto failed;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            goto failed_open;
        }
        done += (size_t)w;
    }
    if (sync && fsync(fd) != 0) goto failed_open;
    if (close(fd) != 0) goto failed;
    lua_pushboolean(L, 1);
    return 1;
failed_open:
    saved = errno;
    close(fd);
    return file_error(L, path, NULL, saved);
failed:
    return file_error(L, path, NULL, errno);
}

/* the directory holding path, synced: a file just created there is on the
 * disk under its name (an fsync of the file alone does not say so).  dir:
 * room for path's length + 2. */
static int sync_parent(const char *path, size_t n, char *dir) {
    int dfd, rc, saved;
    size_t k = n;
    while (k > 0 && path[k - 1] != '/') k--;
    while (k > 1 && path[k - 1] == '/') k--;
    if (k == 0) {
        dir[0] = '.';
        k = 1;
    } else {
        memcpy(dir, path, k);
    }
    dir[k] = '\0';
    do {
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (dfd < 0 && errno == EINTR);
    if (dfd < 0) return -1;
    rc = fsync(dfd);
    saved = errno;
    close(dfd);
    errno = saved;
    return rc;
}

/* lock_file(path) -> fd | nil, message, busy: the file (created 0600 if
 * absent, its directory synced then) opened read-write and an exclusive
 * flock(2) taken on it, held until unlock_file(fd) or the process's end, a
 * SIGKILL included (the kernel drops it): two runs of one batch journal at
 * once would both send.  The lock is the file's (its inode's), so a second
 * run reaching it through a symlink or a hard link is refused too.  Only a
 * regular file: a FIFO would block its reader, /dev/null would swallow the
 * journal.  busy: another holds it.  flock, not POSIX's fcntl lock: that
 * one belongs to the process (a second batch in the same process would get
 * it too) and goes with the first close of any descriptor of the file,
 * which append_durable makes at each record. */
static int l_lock_file(lua_State *L) {
    size_t n;
    const char *path = kn_check_lstring(L, 1, "lock_file's path", &n);
    /* (allocated before any descriptor is open: an allocation error raises) */
    char *dir = lua_newuserdata(L, n + 2);
    int fd, saved, created = 0, tries = 0;
    struct stat st;
    const char *why = NULL;
    /* (a dangling symlink: there and not there at once; given up on) */
    for (; tries < 16; tries++) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NONBLOCK, 0600);
        if (fd >= 0) {
            created = 1;
            break;
        }
        if (errno == EINTR) continue;
        if (errno != EEXIST) break;
        fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0 || (errno != EINTR && errno != ENOENT)) break;
    }
    if (fd < 0 && errno == EEXIST) errno = ENOENT;
    if (fd < 0) goto failed;
    if (fstat(fd, &st) != 0) goto failed_open;
    if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
        goto failed_open;
    }
    if (created && sync_parent(path, n, dir) != 0) goto failed_open;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        saved = errno;
        close(fd);
        file_error(L, path, NULL, saved);
        lua_pushboolean(L, saved == EWOULDBLOCK);
        return 3;
    }
    lua_pushinteger(L, fd);
    return 1;
failed_open:
    saved = errno;
    close(fd);
    return file_error(L, path, why, saved);
failed:
    return file_error(L, path, why, errno);
}

/* truncate_file(fd, size) -> true | nil, message: the file of lock_file's
 * fd cut to size bytes and synced (a journal's torn last line cut off in
 * place: the file, and so its lock, stay the same) */
static int l_truncate_file(lua_State *L) {
    int fd = locked_fd(L, 1, "truncate_file");
    lua_Integer size = luaL_checkinteger(L, 2);
    int rc;
    if (size < 0) return kn_misuse(L, "truncate_file's size must be >= 0");
    do {
        rc = ftruncate(fd, (off_t)size);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) rc = fsync(fd);
    if (rc != 0) return file_error(L, "truncate", NULL, errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* unlock_file(fd): the lock of lock_file dropped, its descriptor closed */
static int l_unlock_file(lua_State *L) {
    close(locked_fd(L, 1, "unlock_file"));
    return 0;
}

/* file_kind(path) -> "file" | "directory" | "fifo" | "char" | "block" |
 * "socket" | "other", of what path names (a symlink followed), or nil,
 * message (absent: "absent").  kinot report --html replaces a file (or a
 * path that is none yet) by a rename, and writes into anything else: a
 * rename over /dev/null or a pipe would replace the node itself. */
static int l_file_kind(lua_State *L) {
    size_t n;
    const char *path = kn_check_lstring(L, 1, "file_kind's path", &n);
    struct stat st;
    const char *kind = "other";
    if (strlen(path) != n) return kn_misuse(L, "file_kind's path holds a NUL byte");
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return file_error(L, "stat", "absent", 0);
        return file_error(L, "stat", NULL, errno);
    }
    if (S_ISREG(st.st_mode)) kind = "file";
    else if (S_ISDIR(st.st_mode)) kind = "directory";
    else if (S_ISFIFO(st.st_mode)) kind = "fifo";
    else if (S_ISCHR(st.st_mode)) kind = "char";
    else if (S_ISBLK(st.st_mode)) kind = "block";
    else if (S_ISSOCK(st.st_mode)) kind = "socket";
    lua_pushstring(L, kind);
    return 1;
}

void kn_open_util(lua_State *L) {
    static const luaL_Reg funcs[] = {{"content_md5", l_content_md5},
                                     {"md5_hex", l_md5_hex},
                                     {"digest", l_digest},
                                     {"uuid", l_uuid},
                                     {"ct_equal", l_ct_equal},
                                     {"now_ms", l_now_ms},
                                     {"monotonic", l_monotonic},
                                     {"sleep", l_sleep},
                                     {"catch_interrupt", l_catch_interrupt},
                                     {"release_interrupt", l_release_interrupt},
                                     {"interrupted", l_interrupted},
                                     {"die_of_interrupt", l_die_of_interrupt},
                                     {"append_durable", l_append_durable},
                                     {"lock_file", l_lock_file},
                                     {"unlock_file", l_unlock_file},
                                     {"truncate_file", l_truncate_file},
                                     {"file_kind", l_file_kind},
                                     {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
    luaL_newmetatable(L, INTERRUPT_MT); /* (a token of catch_interrupt: no methods) */
    lua_pop(L, 1);
}
