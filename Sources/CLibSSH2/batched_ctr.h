#ifndef KDCT_BATCHED_CTR_H
#define KDCT_BATCHED_CTR_H
/* AES-CTR for libssh2 1.10 without its per-block cost.

   libssh2 1.10 encrypts and decrypts every SSH packet one 16-byte block at a time, one EVP_Cipher() call per block
   (transport.c), and OpenSSL answers each such call with a single-block, unpipelined AES round trip through its
   CTR wrapper: about 60% of an upload's client CPU on the benchmark machine. CTR mode's output is the input XORed
   with a keystream that depends only on the key and the counter, so the keystream can be produced ahead, 4 KiB
   at a time, by OpenSSL's own AES-CTR (the "default" provider, pipelined AES-NI), and each 16-byte call only XORs.

   This is an OpenSSL 3 provider ("kdct-ctr") offering AES-128/192/256-CTR built that way, and
   kdct_ssh2_prefer_batched_ctr() loads it and makes it the preferred implementation of those three names in the
   process's default library context ("?provider=kdct-ctr": preferred where it exists, everything else still comes
   from the default provider). libssh2 asks for EVP_aes_128_ctr() and so gets it; the bytes on the wire are those
   of AES-CTR, which any SSH server decrypts. Header-only, so it lives in the shim with the rest of our libssh2 glue.
   With OpenSSL before 3.0 nothing is installed. */
#include <openssl/opensslv.h>
#include <stdint.h>
#include <string.h>

#if OPENSSL_VERSION_MAJOR >= 3
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

enum { KDCT_CTR_STREAM = 4096 };

typedef struct {
    EVP_CIPHER_CTX *inner;                    /* AES-CTR from the default provider, fed zeros */
    unsigned char stream[KDCT_CTR_STREAM];    /* keystream ahead */
    size_t used;                              /* keystream bytes consumed; KDCT_CTR_STREAM when empty */
    size_t keylen;
} kdct_ctr_ctx;

static inline void *kdct_ctr_newctx(size_t keylen) {
    kdct_ctr_ctx *ctx = OPENSSL_zalloc(sizeof(*ctx));
    if (ctx == NULL) return NULL;
    ctx->inner = EVP_CIPHER_CTX_new();
    if (ctx->inner == NULL) {
        OPENSSL_free(ctx);
        return NULL;
    }
    ctx->keylen = keylen;
    ctx->used = KDCT_CTR_STREAM;
    return ctx;
}
static inline void *kdct_ctr_newctx128(void *provctx) { (void)provctx; return kdct_ctr_newctx(16); }
static inline void *kdct_ctr_newctx192(void *provctx) { (void)provctx; return kdct_ctr_newctx(24); }
static inline void *kdct_ctr_newctx256(void *provctx) { (void)provctx; return kdct_ctr_newctx(32); }

static inline void kdct_ctr_freectx(void *vctx) {
    kdct_ctr_ctx *ctx = vctx;
    if (ctx == NULL) return;
    EVP_CIPHER_CTX_free(ctx->inner);
    OPENSSL_clear_free(ctx, sizeof(*ctx));
}

/* Encryption and decryption are the same in CTR mode. A NULL key or IV keeps the one set before. */
static inline int kdct_ctr_init(void *vctx, const unsigned char *key, size_t keylen, const unsigned char *iv,
                                size_t ivlen, const OSSL_PARAM params[]) {
    kdct_ctr_ctx *ctx = vctx;
    (void)params;
    if (key != NULL && keylen != ctx->keylen) return 0;
    if (iv != NULL && ivlen != 16) return 0;
    const EVP_CIPHER *cipher = NULL;
    EVP_CIPHER *fetched = NULL;
    if (EVP_CIPHER_CTX_get0_cipher(ctx->inner) == NULL) {
        const char *name = ctx->keylen == 16 ? "AES-128-CTR" : ctx->keylen == 24 ? "AES-192-CTR" : "AES-256-CTR";
        fetched = EVP_CIPHER_fetch(NULL, name, "provider=default");
        if (fetched == NULL) return 0;
        cipher = fetched;
    }
    int ok = EVP_EncryptInit_ex2(ctx->inner, cipher, key, iv, NULL);
    EVP_CIPHER_free(fetched);
    OPENSSL_cleanse(ctx->stream, sizeof(ctx->stream));
    ctx->used = KDCT_CTR_STREAM;
    return ok;
}

static inline int kdct_ctr_xor(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
                               const unsigned char *in, size_t inl) {
    kdct_ctr_ctx *ctx = vctx;
    if (outsize < inl) return 0;
    size_t done = 0;
    while (done < inl) {
        if (ctx->used == KDCT_CTR_STREAM) {
            /* The keystream is what zeros encrypt to (in place: CTR allows it). */
            int produced = 0;
            memset(ctx->stream, 0, KDCT_CTR_STREAM);
            if (!EVP_EncryptUpdate(ctx->inner, ctx->stream, &produced, ctx->stream, KDCT_CTR_STREAM)
                || produced != KDCT_CTR_STREAM) return 0;
            ctx->used = 0;
        }
        size_t count = inl - done;
        if (count > KDCT_CTR_STREAM - ctx->used) count = KDCT_CTR_STREAM - ctx->used;
        const unsigned char *key = ctx->stream + ctx->used;
        size_t i = 0;
        for (; i + 8 <= count; i += 8) {  /* word by word (memcpy: no alignment or aliasing assumptions) */
            uint64_t a, k;
            memcpy(&a, in + done + i, 8);
            memcpy(&k, key + i, 8);
            a ^= k;
            memcpy(out + done + i, &a, 8);
        }
        for (; i < count; i++) out[done + i] = in[done + i] ^ key[i];
        ctx->used += count;
        done += count;
    }
    *outl = inl;
    return 1;
}

static inline int kdct_ctr_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize) {
    (void)vctx; (void)out; (void)outsize;
    *outl = 0;
    return 1;
}

/* What OpenSSL asks an algorithm when it is fetched: CTR is a stream mode (block size 1), 16-byte IV. */
static inline int kdct_ctr_get_params(OSSL_PARAM params[], size_t keylen) {
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE)) != NULL && !OSSL_PARAM_set_uint(p, EVP_CIPH_CTR_MODE)) return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL && !OSSL_PARAM_set_size_t(p, keylen)) return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL && !OSSL_PARAM_set_size_t(p, 16)) return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_BLOCK_SIZE)) != NULL && !OSSL_PARAM_set_size_t(p, 1)) return 0;
    const char *flags[] = { OSSL_CIPHER_PARAM_AEAD, OSSL_CIPHER_PARAM_CUSTOM_IV, OSSL_CIPHER_PARAM_CTS,
                            OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, OSSL_CIPHER_PARAM_HAS_RAND_KEY };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if ((p = OSSL_PARAM_locate(params, flags[i])) != NULL && !OSSL_PARAM_set_int(p, 0)) return 0;
    }
    return 1;
}
static inline int kdct_ctr_get_params128(OSSL_PARAM params[]) { return kdct_ctr_get_params(params, 16); }
static inline int kdct_ctr_get_params192(OSSL_PARAM params[]) { return kdct_ctr_get_params(params, 24); }
static inline int kdct_ctr_get_params256(OSSL_PARAM params[]) { return kdct_ctr_get_params(params, 32); }

static inline int kdct_ctr_get_ctx_params(void *vctx, OSSL_PARAM params[]) {
    kdct_ctr_ctx *ctx = vctx;
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL && !OSSL_PARAM_set_size_t(p, ctx->keylen)) return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL && !OSSL_PARAM_set_size_t(p, 16)) return 0;
    return 1;
}

/* Padding and the like mean nothing to a stream mode. */
static inline int kdct_ctr_set_ctx_params(void *vctx, const OSSL_PARAM params[]) {
    (void)vctx; (void)params;
    return 1;
}

/* The tables live inside functions: Swift's importer emits the inline functions it uses (and their local
   statics), but not static data of a header. */
static inline const OSSL_PARAM *kdct_ctr_gettable_params(void *provctx) {
    (void)provctx;
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, NULL), OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL), OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_AEAD, NULL), OSSL_PARAM_int(OSSL_CIPHER_PARAM_CUSTOM_IV, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_CTS, NULL), OSSL_PARAM_int(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_HAS_RAND_KEY, NULL), OSSL_PARAM_END
    };
    return table;
}
static inline const OSSL_PARAM *kdct_ctr_gettable_ctx_params(void *cctx, void *provctx) {
    (void)cctx; (void)provctx;
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL), OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL), OSSL_PARAM_END
    };
    return table;
}
static inline const OSSL_PARAM *kdct_ctr_settable_ctx_params(void *cctx, void *provctx) {
    (void)cctx; (void)provctx;
    static const OSSL_PARAM table[] = { OSSL_PARAM_END };
    return table;
}

#define KDCT_CTR_DISPATCH(bits)                                                                               \
    static inline const OSSL_DISPATCH *kdct_ctr_functions##bits(void) {                                     \
        static const OSSL_DISPATCH table[] = {                                                               \
            { OSSL_FUNC_CIPHER_NEWCTX, (void (*)(void))kdct_ctr_newctx##bits },                              \
            { OSSL_FUNC_CIPHER_FREECTX, (void (*)(void))kdct_ctr_freectx },                                  \
            { OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*)(void))kdct_ctr_init },                                \
            { OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*)(void))kdct_ctr_init },                                \
            { OSSL_FUNC_CIPHER_UPDATE, (void (*)(void))kdct_ctr_xor },                                       \
            { OSSL_FUNC_CIPHER_FINAL, (void (*)(void))kdct_ctr_final },                                      \
            { OSSL_FUNC_CIPHER_CIPHER, (void (*)(void))kdct_ctr_xor },                                       \
            { OSSL_FUNC_CIPHER_GET_PARAMS, (void (*)(void))kdct_ctr_get_params##bits },                      \
            { OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*)(void))kdct_ctr_gettable_params },                  \
            { OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*)(void))kdct_ctr_get_ctx_params },                    \
            { OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*)(void))kdct_ctr_set_ctx_params },                    \
            { OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))kdct_ctr_gettable_ctx_params },          \
            { OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))kdct_ctr_settable_ctx_params },          \
            { 0, NULL }                                                                                      \
        };                                                                                                   \
        return table;                                                                                        \
    }
KDCT_CTR_DISPATCH(128)
KDCT_CTR_DISPATCH(192)
KDCT_CTR_DISPATCH(256)

/* The algorithms, filled in by kdct_ssh2_prefer_batched_ctr() before the provider is loaded. */
static inline OSSL_ALGORITHM *kdct_ctr_algorithms(void) {
    static OSSL_ALGORITHM table[4];
    return table;
}

static inline const OSSL_ALGORITHM *kdct_ctr_query(void *provctx, int operation, int *no_cache) {
    (void)provctx;
    *no_cache = 0;
    return operation == OSSL_OP_CIPHER ? kdct_ctr_algorithms() : NULL;
}

static inline const OSSL_DISPATCH *kdct_ctr_provider_functions(void) {
    static const OSSL_DISPATCH table[] = {
        { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))kdct_ctr_query },
        { 0, NULL }
    };
    return table;
}

static inline int kdct_ctr_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                                         const OSSL_DISPATCH **out, void **provctx) {
    (void)in;
    *out = kdct_ctr_provider_functions();
    *provctx = (void *)handle;
    return 1;
}

/* Loads the provider (and the default one, which loading any provider would otherwise leave out) and prefers it
   for AES-CTR. Call once, before libssh2 creates any session. Returns 1 when installed. */
static inline int kdct_ssh2_prefer_batched_ctr(void) {
    OSSL_ALGORITHM *algorithms = kdct_ctr_algorithms();
    const char *property = "provider=kdct-ctr", *about = "AES-CTR, keystream produced 4 KiB ahead";
    algorithms[0] = (OSSL_ALGORITHM){ "AES-128-CTR", property, kdct_ctr_functions128(), about };
    algorithms[1] = (OSSL_ALGORITHM){ "AES-192-CTR", property, kdct_ctr_functions192(), about };
    algorithms[2] = (OSSL_ALGORITHM){ "AES-256-CTR", property, kdct_ctr_functions256(), about };
    algorithms[3] = (OSSL_ALGORITHM){ NULL, NULL, NULL, NULL };
    if (!OSSL_PROVIDER_add_builtin(NULL, "kdct-ctr", kdct_ctr_provider_init)) return 0;
    if (OSSL_PROVIDER_load(NULL, "default") == NULL) return 0;
    if (OSSL_PROVIDER_load(NULL, "kdct-ctr") == NULL) return 0;
    return EVP_set_default_properties(NULL, "?provider=kdct-ctr");
}

/* Goes back to OpenSSL's own AES-CTR (after a failed self-test). */
static inline void kdct_ssh2_plain_ctr(void) { (void)EVP_set_default_properties(NULL, ""); }

/* Encrypts pseudo-random data with the preferred AES-CTR (in 16-byte calls, as libssh2 does, then in odd sizes)
   and with the default provider's, for each key size; 1 when every byte agrees. */
static inline int kdct_ssh2_batched_ctr_self_test(void) {
    static const char *names[] = { "AES-128-CTR", "AES-192-CTR", "AES-256-CTR" };
    unsigned char key[32], iv[16], plain[10000], mine[10000], reference[10000];
    for (size_t i = 0; i < sizeof(plain); i++) plain[i] = (unsigned char)(i * 131 + 7);
    for (size_t i = 0; i < sizeof(key); i++) key[i] = (unsigned char)(i * 17 + 1);
    for (size_t i = 0; i < sizeof(iv); i++) iv[i] = 0xff;  /* the counter wraps at once */
    for (int n = 0; n < 3; n++) {
        EVP_CIPHER *ours = EVP_CIPHER_fetch(NULL, names[n], "provider=kdct-ctr");
        EVP_CIPHER *theirs = EVP_CIPHER_fetch(NULL, names[n], "provider=default");
        EVP_CIPHER_CTX *a = EVP_CIPHER_CTX_new(), *b = EVP_CIPHER_CTX_new();
        int ok = ours && theirs && a && b && EVP_CipherInit_ex2(a, ours, key, iv, 1, NULL)
            && EVP_CipherInit_ex2(b, theirs, key, iv, 1, NULL);
        size_t done = 0, step = 16;
        while (ok && done < sizeof(plain)) {
            size_t count = done + step > sizeof(plain) ? sizeof(plain) - done : step;
            int got = EVP_Cipher(a, mine + done, plain + done, (unsigned int)count);
            int outl = 0;
            ok = got == (int)count && EVP_EncryptUpdate(b, reference + done, &outl, plain + done, (int)count)
                && outl == (int)count;
            done += count;
            if (done > 5000) step = 1 + (done % 97);
        }
        ok = ok && memcmp(mine, reference, sizeof(plain)) == 0;
        EVP_CIPHER_CTX_free(a);
        EVP_CIPHER_CTX_free(b);
        EVP_CIPHER_free(ours);
        EVP_CIPHER_free(theirs);
        if (!ok) return 0;
    }
    return 1;
}
#else
static inline int kdct_ssh2_prefer_batched_ctr(void) { return 0; }
static inline void kdct_ssh2_plain_ctr(void) {}
static inline int kdct_ssh2_batched_ctr_self_test(void) { return 0; }
#endif

#endif
