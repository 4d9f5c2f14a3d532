"""Load the compiled fast path.

`rproxy._fastpath` is compiled against llhttp.h but not linked to any file:
its `llhttp_*` symbols are resolved from llhttp's own extension module
`__llhttp`, which must therefore be in the global symbol scope first.  If
something imported llhttp already (without RTLD_GLOBAL), reopening the same
file with RTLD_GLOBAL promotes it; the loader does not load it twice.
"""
import os
import sys

_promote = "__llhttp" in sys.modules
_flags = sys.getdlopenflags()
sys.setdlopenflags(_flags | os.RTLD_GLOBAL)
try:
    import __llhttp
finally:
    sys.setdlopenflags(_flags)
if _promote:        # loaded before without RTLD_GLOBAL: reopen it with it (ctypes only then)
    import ctypes

    ctypes.CDLL(__llhttp.__file__, mode=os.RTLD_GLOBAL | os.RTLD_NOW)

from rproxy._fastpath import (  # noqa: E402
    acme_ctx_record,
    acme_http_record,
    acme_stats,
    acme_tls_record,
    TLS_FUNCTIONS,
    XSSL_BITS,
    Worker,
    cache_policy,
    cache_stats,
    _edge_attach,
    _edge_set_rule,
    _pp_set_server,
    _redis_attach,
    bench_edge_gcra,
    edge_layout,
    check_posix_regex,
    compress_buffer,
    compress_memory,
    compress_stats,
    http_date_parse,
    metrics_layout,
    rule_set_cache,
    kz_layout,
    kz_init,
    kz_set_loaded,
    kz_put_key,
    kz_get,
    kz_del_key,
    kz_touch_key,
    kz_stats,
    kz_evict,
    rule_set_compress,
    set_https_redirect,
    set_mime_types,
    set_malloc_trim_threshold,
    set_parent_death_signal,
    sizes,
    tls_bind,
    tls_callbacks,
    tls_constants,
    tls_register_context,
    tls_set_downstream,
    tls_set_rule,
    tls_set_server,
    tls_set_vhost,
    tls_stats,
    tls_store_record,
)

__all__ = ["Worker", "check_posix_regex", "metrics_layout", "set_malloc_trim_threshold", "set_parent_death_signal", "sizes",
           "TLS_FUNCTIONS", "XSSL_BITS", "set_https_redirect", "set_mime_types",
           "tls_bind", "tls_callbacks", "tls_constants",
           "tls_register_context", "tls_set_downstream", "tls_set_rule", "tls_set_server", "tls_set_vhost",
           "tls_stats", "tls_store_record", "compress_buffer", "compress_memory", "compress_stats",
           "rule_set_compress", "metrics_layout", "cache_policy", "http_date_parse", "cache_stats",
           "rule_set_cache", "kz_layout", "kz_init", "kz_set_loaded", "kz_put_key", "kz_get",
           "kz_del_key", "kz_touch_key", "kz_stats", "kz_evict", "_edge_attach", "_edge_set_rule", "bench_edge_gcra", "edge_layout",
           "_pp_set_server", "_redis_attach", "acme_ctx_record", "acme_http_record", "acme_stats",
           "acme_tls_record"]
