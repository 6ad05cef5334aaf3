#!/usr/bin/env python3
"""Computes signature vectors for schemes whose providers publish none (Shopify, Lemon Squeezy, Polar's key
quirk, the generic hmac scheme), with Python's hmac/hashlib and each provider's documented algorithm.
Used by Tests/KoalaRouterTests/Verify/SchemeVectorTests.swift; run it to check or regenerate them."""
import base64, hashlib, hmac

def hexsig(key, msg, algo=hashlib.sha256):
    return hmac.new(key, msg, algo).hexdigest()

# Shopify: base64(HMAC-SHA256(app secret, raw body)) in X-Shopify-Hmac-Sha256 (shopify.dev, shopify-api-js validate.ts).
body = b'{"id":820982911946154508,"email":"jon@example.com","topic":"customers/create"}'
print("shopify", base64.b64encode(hmac.new(b"shpss_koala_router_test", body, hashlib.sha256).digest()).decode())

# Lemon Squeezy: hex(HMAC-SHA256(signing secret, raw body)) in X-Signature (docs: signing-requests).
body = b'{"meta":{"event_name":"order_created"},"data":{"type":"orders","id":"1","attributes":{"user_email":"ada@acme.io"}}}'
print("lemon", hexsig(b"koala-lemon-secret", body))

# Polar: Standard Webhooks, but the key is the UTF-8 bytes of the whole secret string (polar-js webhooks.ts).
body = b'{"type":"order.created","data":{"id":"ord_1"}}'
print("polar", "v1," + base64.b64encode(hmac.new(b"polar_whs_koala_test", b"msg_polar_1.1700000000." + body, hashlib.sha256).digest()).decode())

# Generic hmac scheme: sha512, base64, prefix "sha512=", signed "{timestamp}:{id}:{body}".
body = b'{"type":"thing.happened","id":"t_1"}'
print("hmac", "sha512=" + base64.b64encode(hmac.new(b"generic-secret", b"1700000000:del_1:" + body, hashlib.sha512).digest()).decode())

# Paddle (check of the SDK test's second vector with two h1 entries).
print("paddle2", hexsig(b"VALID_SECRET", b'1698796800:{"data": "value"}'))
