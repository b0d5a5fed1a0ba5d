#ifndef KDCT_CLIBSSH2_SHIM_H
#define KDCT_CLIBSSH2_SHIM_H
/* libssh2 for Swift. Swift cannot call C macros, and libssh2 spells many of its everyday calls as macros over
   the `_ex` functions; these inline wrappers give them callable names (kdct_ssh2_*). Nothing here adds behaviour
   except the keyboard-interactive responder, which answers every non-echoed prompt with one password. */
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <stdlib.h>
#include <string.h>

/* Session */
static inline LIBSSH2_SESSION *kdct_ssh2_session_init(void) {
    return libssh2_session_init_ex(NULL, NULL, NULL, NULL);
}
static inline int kdct_ssh2_session_disconnect(LIBSSH2_SESSION *session, const char *description) {
    return libssh2_session_disconnect_ex(session, SSH_DISCONNECT_BY_APPLICATION, description, "");
}

/* Authentication */
static inline int kdct_ssh2_userauth_password(LIBSSH2_SESSION *session, const char *user, const char *password) {
    return libssh2_userauth_password_ex(session, user, (unsigned int)strlen(user), password,
                                        (unsigned int)strlen(password), NULL);
}
static inline int kdct_ssh2_userauth_publickey_fromfile(LIBSSH2_SESSION *session, const char *user,
                                                        const char *publickey, const char *privatekey,
                                                        const char *passphrase) {
    return libssh2_userauth_publickey_fromfile_ex(session, user, (unsigned int)strlen(user), publickey, privatekey,
                                                  passphrase);
}

/* Keyboard-interactive with a known password: the session's abstract pointer carries the password while the
   exchange runs. Prompts that echo (a user name, a question) get an empty answer; hidden prompts get the
   password. Responses are malloc'd; libssh2 frees them with its default allocator (free). */
static inline void kdct_ssh2_kbdint_responder(const char *name, int name_len, const char *instruction,
                                              int instruction_len, int num_prompts,
                                              const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
                                              LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract) {
    (void)name; (void)name_len; (void)instruction; (void)instruction_len;
    const char *password = abstract ? (const char *)*abstract : NULL;
    for (int i = 0; i < num_prompts; i++) {
        const char *answer = (password && !prompts[i].echo) ? password : "";
        size_t length = strlen(answer);
        responses[i].text = (char *)malloc(length + 1);
        if (responses[i].text) {
            memcpy(responses[i].text, answer, length + 1);
            responses[i].length = (unsigned int)length;
        } else {
            responses[i].length = 0;
        }
    }
}
static inline int kdct_ssh2_userauth_kbdint_password(LIBSSH2_SESSION *session, const char *user,
                                                     const char *password) {
    void **abstract = libssh2_session_abstract(session);
    void *saved = *abstract;
    *abstract = (void *)password;
    int rc = libssh2_userauth_keyboard_interactive_ex(session, user, (unsigned int)strlen(user),
                                                      kdct_ssh2_kbdint_responder);
    *abstract = saved;
    return rc;
}

/* Channels */
static inline LIBSSH2_CHANNEL *kdct_ssh2_channel_open_session(LIBSSH2_SESSION *session) {
    return libssh2_channel_open_ex(session, "session", sizeof("session") - 1, LIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                   LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
}
static inline int kdct_ssh2_channel_exec(LIBSSH2_CHANNEL *channel, const char *command) {
    return libssh2_channel_process_startup(channel, "exec", sizeof("exec") - 1, command,
                                           (unsigned int)strlen(command));
}
static inline ssize_t kdct_ssh2_channel_read(LIBSSH2_CHANNEL *channel, char *buffer, size_t length) {
    return libssh2_channel_read_ex(channel, 0, buffer, length);
}
static inline ssize_t kdct_ssh2_channel_read_stderr(LIBSSH2_CHANNEL *channel, char *buffer, size_t length) {
    return libssh2_channel_read_ex(channel, SSH_EXTENDED_DATA_STDERR, buffer, length);
}
static inline ssize_t kdct_ssh2_channel_write(LIBSSH2_CHANNEL *channel, const char *buffer, size_t length) {
    return libssh2_channel_write_ex(channel, 0, buffer, length);
}

/* SFTP */
static inline LIBSSH2_SFTP_HANDLE *kdct_ssh2_sftp_open(LIBSSH2_SFTP *sftp, const char *path, unsigned long flags,
                                                       long mode) {
    return libssh2_sftp_open_ex(sftp, path, (unsigned int)strlen(path), flags, mode, LIBSSH2_SFTP_OPENFILE);
}
static inline int kdct_ssh2_sftp_close(LIBSSH2_SFTP_HANDLE *handle) { return libssh2_sftp_close_handle(handle); }
static inline int kdct_ssh2_sftp_fstat(LIBSSH2_SFTP_HANDLE *handle, LIBSSH2_SFTP_ATTRIBUTES *attributes) {
    return libssh2_sftp_fstat_ex(handle, attributes, 0);
}
static inline int kdct_ssh2_sftp_fsetstat(LIBSSH2_SFTP_HANDLE *handle, LIBSSH2_SFTP_ATTRIBUTES *attributes) {
    return libssh2_sftp_fstat_ex(handle, attributes, 1);
}
static inline int kdct_ssh2_sftp_stat(LIBSSH2_SFTP *sftp, const char *path, LIBSSH2_SFTP_ATTRIBUTES *attributes) {
    return libssh2_sftp_stat_ex(sftp, path, (unsigned int)strlen(path), LIBSSH2_SFTP_STAT, attributes);
}
static inline int kdct_ssh2_sftp_lstat(LIBSSH2_SFTP *sftp, const char *path, LIBSSH2_SFTP_ATTRIBUTES *attributes) {
    return libssh2_sftp_stat_ex(sftp, path, (unsigned int)strlen(path), LIBSSH2_SFTP_LSTAT, attributes);
}
static inline int kdct_ssh2_sftp_unlink(LIBSSH2_SFTP *sftp, const char *path) {
    return libssh2_sftp_unlink_ex(sftp, path, (unsigned int)strlen(path));
}
/* Plain SSH_FXP_RENAME: OpenSSH's server implements it as link()+unlink(), so it never replaces an existing
   file (flags only exist from SFTP version 5 on; OpenSSH speaks version 3). */
static inline int kdct_ssh2_sftp_rename(LIBSSH2_SFTP *sftp, const char *from, const char *to) {
    return libssh2_sftp_rename_ex(sftp, from, (unsigned int)strlen(from), to, (unsigned int)strlen(to),
                                  LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC |
                                      LIBSSH2_SFTP_RENAME_NATIVE);
}
static inline int kdct_ssh2_sftp_realpath(LIBSSH2_SFTP *sftp, const char *path, char *target, unsigned int length) {
    return libssh2_sftp_symlink_ex(sftp, path, (unsigned int)strlen(path), target, length, LIBSSH2_SFTP_REALPATH);
}

/* Constants Swift cannot import (they are expressions or unsigned long macros). */
static const unsigned long kdct_ssh2_fxf_read = LIBSSH2_FXF_READ;
static const unsigned long kdct_ssh2_fxf_write = LIBSSH2_FXF_WRITE;
static const unsigned long kdct_ssh2_fxf_creat = LIBSSH2_FXF_CREAT;
static const unsigned long kdct_ssh2_fxf_excl = LIBSSH2_FXF_EXCL;
static const unsigned long kdct_ssh2_fxf_trunc = LIBSSH2_FXF_TRUNC;
static const unsigned long kdct_ssh2_attr_size = LIBSSH2_SFTP_ATTR_SIZE;
static const unsigned long kdct_ssh2_attr_permissions = LIBSSH2_SFTP_ATTR_PERMISSIONS;

#endif
