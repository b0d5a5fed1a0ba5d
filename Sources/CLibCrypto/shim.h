// OpenSSL's libcrypto, for SHA-256 through the EVP interface (hardware SHA extensions when the CPU has them).
// KDCTFormats uses it instead of swift-crypto, which would link Foundation into every program reading an image.
#include <openssl/evp.h>
