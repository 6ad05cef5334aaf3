#!/usr/bin/env python3
"""Regenerates the Stripe signature vectors used in Tests/KoalaRouterTests/Verify/StripeVerifierTests.swift
with Stripe's official Python library (pip install stripe). Stripe publishes no fixed vector; this makes one
with Stripe's own code rather than ours."""
import stripe

VECTORS = [
    ("whsec_test_secret", 12345,
     '{\n  "id": "evt_test_webhook",\n  "object": "event",\n  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }\n}'),
    ("whsec_koala_router_test_vector", 1732871520,
     '{"id":"evt_1QkoalaVector","object":"event","type":"invoice.paid","created":1732871520,'
     '"data":{"object":{"id":"in_1","customer_email":"ada@analytical-engines.io","amount_paid":4900,"currency":"usd"}}}'),
]

print("stripe", stripe.VERSION)
for secret, ts, payload in VECTORS:
    sig = stripe.WebhookSignature._compute_signature("%d.%s" % (ts, payload), secret)
    header = "t=%d,v1=%s" % (ts, sig)
    assert stripe.WebhookSignature.verify_header(payload, header, secret)
    print(repr(secret), repr(payload))
    print("  ", header)
