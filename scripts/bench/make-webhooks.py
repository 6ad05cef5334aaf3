#!/usr/bin/env python3
"""Writes N signed, unique ~2 KB Stripe invoice.paid webhooks, one per line as
"<Stripe-Signature>\t<X-Hub-Signature-256>\t<body>" (the second, sha256=<hex> of the body, is what a generic
HMAC peer such as adnanh/webhook checks), for wrk (scripts/bench/webhooks.lua).
Usage: make-webhooks.py N SECRET OUT [PEOPLE]"""
import hashlib, hmac, json, sys, time

n, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
people = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
run = hex(int(time.time() * 1000))[2:]
ts = str(int(time.time()))
with open(out, "w") as f:
    for i in range(n):
        body = {
            "id": f"evt_bench_{run}_{i}", "object": "event", "api_version": "2024-06-20", "created": int(ts) - 5,
            "livemode": False, "pending_webhooks": 1, "type": "invoice.paid",
            "request": {"id": f"req_{i}", "idempotency_key": f"idem-{run}-{i}"},
            "data": {"object": {
                "id": f"in_bench_{i}", "object": "invoice", "amount_due": 4900 + i % 100, "amount_paid": 4900 + i % 100,
                "amount_remaining": 0, "attempt_count": 1, "attempted": True, "billing_reason": "subscription_cycle",
                "collection_method": "charge_automatically", "currency": "usd", "customer": f"cus_bench_{i % people}",
                "customer_email": f"person{i % people}@company{i % people}.io", "customer_name": f"Person {i % people}",
                "number": f"BENCH-{i:08d}", "status": "paid", "status_transitions": {"paid_at": int(ts) - 5, "finalized_at": int(ts) - 60},
                "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_" + "x" * 60,
                "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/test_" + "y" * 60 + "/pdf",
                "lines": {"object": "list", "data": [{"id": f"il_{i}", "object": "line_item", "amount": 4900,
                          "currency": "usd", "description": "1 × Pro plan (at $49.00 / month)", "period": {"start": int(ts), "end": int(ts) + 2592000},
                          "price": {"id": "price_pro_monthly", "nickname": "Pro", "unit_amount": 4900, "currency": "usd",
                                    "recurring": {"interval": "month", "interval_count": 1}, "product": "prod_pro"}, "quantity": 1}],
                          "has_more": False, "total_count": 1, "url": f"/v1/invoices/in_bench_{i}/lines"},
                "metadata": {"plan": "pro", "seats": "5", "region": "eu-west-1"},
                "payment_settings": {"payment_method_types": ["card"]},
                "period_start": int(ts) - 2592000, "period_end": int(ts), "subtotal": 4900, "total": 4900, "tax": None,
                "footer": "Thank you for your business. " * 14,
            }},
        }
        raw = json.dumps(body, separators=(",", ":"))
        sig = hmac.new(secret, f"{ts}.{raw}".encode(), hashlib.sha256).hexdigest()
        hub = hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()
        f.write(f"t={ts},v1={sig}\tsha256={hub}\t{raw}\n")
print(f"{n} webhooks, {len(raw)} bytes each, for {people} people -> {out}", file=sys.stderr)
