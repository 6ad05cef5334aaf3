#ifndef KOALA_ROUTER_COPENSSL_SHIM_H
#define KOALA_ROUTER_COPENSSL_SHIM_H
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#endif
