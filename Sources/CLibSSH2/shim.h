#ifndef KDCT_CLIBSSH2_SHIM_H
#define KDCT_CLIBSSH2_SHIM_H
/* libssh2 for Swift. Swift cannot call C macros, and libssh2 spells many of its everyday calls as macros over
   the `_ex` functions; these inline wrappers give them callable names (kdct_ssh2_*). Nothing here adds behaviour
   except the keyboard-interactive responder, which answers every non-echoed prompt with one password, and
   batched_ctr.h, which gives libssh2's AES-CTR a keystream produced ahead. */
#include <libssh2.h>
#include <stdlib.h>
#include "batched_ctr.h"
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
static inline ssize_t kdct_ssh2_channel_write(LIBSSH2_CHANNEL *channel, const char *buffer, size_t length) {
    return libssh2_channel_write_ex(channel, 0, buffer, length);
}
/* The SFTP client in KDCTExport speaks the protocol itself on a "sftp" subsystem channel. */
static inline int kdct_ssh2_channel_subsystem(LIBSSH2_CHANNEL *channel, const char *name) {
    return libssh2_channel_process_startup(channel, "subsystem", sizeof("subsystem") - 1, name,
                                           (unsigned int)strlen(name));
}

#endif
