"""Automatic HTTPS: ACME (RFC 8555) certificates, self-signed ones, renewal.

store.py    the state directory (layout, self-signed certificates, atomic writes)
client.py   the ACME protocol (account, orders, HTTP-01, TLS-ALPN-01, ARI)
manager.py  the helper process that issues and renews
helper.py   the master's side: fork, respawn, stop the helper
watch.py    a worker's thread: new certificates and challenges into the loop
"""
