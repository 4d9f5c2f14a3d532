"""Issue 20's rule actions, from collected blocks to Rule fields: header
rules, security headers, redirects, static roots, sticky sessions.

Header ops are (kind, name, value, tls_only) tuples, kind one of set / add /
remove / default (default = added unless the downstream sent that header;
security headers use it).  A vhost's ops come first, then its rule's; a
rule's `security-headers` replaces its vhost's."""
from __future__ import annotations

import os


# what each security-headers level sends (documented in the README)
BASIC = (("X-Content-Type-Options", "nosniff"),
         ("Referrer-Policy", "strict-origin-when-cross-origin"),
         ("X-Frame-Options", "SAMEORIGIN"))
STRICT = BASIC + (("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
                  ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
                  ("Cross-Origin-Opener-Policy", "same-origin"))
PROFILES = {"off": (), "basic": BASIC, "strict": STRICT}
_CANON = {n.lower(): n for n, _ in STRICT}
_CANON["content-security-policy"] = "Content-Security-Policy"

# headers a rule can never touch: hop-by-hop and message framing
FORBIDDEN = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
             "content-length", "host", "http2-settings"}
MAX_OPS = 64


def _opt(b, name):
    from .loader import opt
    return opt(b, name)


def _security(ld, b):
    """The security header ops a block gives, or None when it says nothing."""
    blocks = b.sub("security_headers_block")
    if blocks:
        sb = blocks[0]
        pairs = dict(PROFILES[_opt(sb, "profile")])
        for low, canon in _CANON.items():
            v = sb.get(low.replace("-", "_"))
            if v is None:
                continue
            if v.strip().lower() == "off":
                pairs.pop(canon, None)
            else:
                pairs[canon] = v
        if b.has("security_headers"):
            ld.error("give security-headers as a level or as a block, not both", b.pos_of("security_headers"))
        return tuple(pairs.items())
    if b.has("security_headers"):
        return PROFILES[b.values["security_headers"]]
    return None


def _rules(ld, b, key):
    ops = []
    for hb in b.sub(key):
        for kind in ("set", "add"):
            for sb in hb.sub(kind):
                for name, value, pos in sb.get("pairs", ()):
                    if name.lower() in FORBIDDEN:
                        ld.error(f"{key.replace('_', '-')}: '{name}' is a hop-by-hop or framing header: "
                                 "rules cannot set it", pos)
                        continue
                    ops.append((kind, name, value, False))
        for i, name in enumerate(_opt(hb, "remove")):
            pos = hb.items.get("remove", ())[i] if i < len(hb.items.get("remove", ())) else hb.pos
            if name.lower() in FORBIDDEN:
                ld.error(f"{key.replace('_', '-')}: '{name}' is a hop-by-hop or framing header: rules "
                         "cannot remove it", pos)
                continue
            ops.append(("remove", name, "", False))
    return ops


def edge_ops(ld, b, parent):
    """(request ops, response ops, security pairs) of a vhost or rule block."""
    return _rules(ld, b, "request_headers"), _rules(ld, b, "response_headers"), _security(ld, b)


def edge_rule(ld, b, vedge, dss):
    """The Rule fields of issue 20 for rule block `b` (vedge: its vhost's ops)."""
    req, resp, sec = edge_ops(ld, b, vedge)
    vreq, vresp, vsec = vedge if vedge is not None else ([], [], None)
    if sec is None:
        sec = vsec or ()
    for name, value in sec:
        if any(c in value for c in "\r\n\0"):
            ld.error(f"security header {name}: control character in its value", b.pos)
    resp_ops = [*vresp, *resp, *(("default", n, v, n == "Strict-Transport-Security") for n, v in sec)]
    req_ops = [*vreq, *req]
    # response ops for $variables: values are sent literally (the request may be gone)
    for kind, name, value, _ in resp_ops:
        if kind in ("set", "add") and "$" in value:
            ld.note(b.pos, f"response header {name}: '$' is sent literally (variables work in "
                           "request-headers and redirect)")
            break
    if len(req_ops) > MAX_OPS or len(resp_ops) > MAX_OPS:
        ld.error(f"rule '{b.title}': more than {MAX_OPS} header rules in one direction", b.pos)
    root = _opt(b, "root")
    redirect = _opt(b, "redirect")
    status = _opt(b, "status")
    deny = _opt(b, "deny")
    if redirect is not None and deny:
        ld.error(f"rule '{b.title}' has both redirect and deny = true: give one", b.pos_of("redirect"))
    if redirect is not None and status is None:
        status = 302
    elif redirect is not None and status not in (301, 302, 303, 307, 308):
        ld.error(f"'status' of a redirect must be 301, 302, 303, 307 or 308, not {status}", b.pos_of("status"))
    if b.has("status") and redirect is None and not deny:
        ld.note(b.pos_of("status"), "'status' has no effect without redirect or deny = true")
    if redirect is None:
        status = 302                # unused: the model's default
    if root is not None and redirect is not None:
        ld.error(f"rule '{b.title}' has both root and redirect: give one", b.pos_of("root"))
    if root is not None and not os.path.isdir(root):
        ld.error(f"root {root!r} is not a directory", b.pos_of("root"))
    for name in _opt(b, "index"):
        if "/" in name or name.startswith("."):
            ld.error(f"index file {name!r}: a plain file name, no '/' and no leading '.'", b.pos_of("index"))
    sticky = _opt(b, "sticky")
    if sticky != "off" and len(dss) < 2:
        ld.note(b.pos_of("sticky"), "'sticky' has no effect with fewer than two downstreams")
    cookie = _opt(b, "sticky-cookie")
    if not cookie or not all(c.isalnum() or c in "_-." for c in cookie):
        ld.error(f"sticky-cookie {cookie!r}: letters, digits, '_', '-' and '.' only", b.pos_of("sticky_cookie"))
    return dict(root=root, index=tuple(_opt(b, "index")), autoindex=_opt(b, "autoindex"), redirect=redirect,
                open_file_cache=_opt(b, "open-file-cache"), open_file_cache_valid=_opt(b, "open-file-cache-valid"),
                status=status, sticky=sticky, sticky_cookie=cookie, sticky_key=_opt(b, "sticky-key"),
                request_ops=tuple(req_ops), response_ops=tuple(resp_ops))


def needs_edge(rule) -> bool:
    return bool(rule.root or rule.redirect or rule.request_ops or rule.response_ops or rule.sticky != "off")
