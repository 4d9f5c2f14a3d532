# libnghttp2's C API as Debian 12 ships it (1.52: the ssize_t functions; the
# nghttp2_ssize `*2` variants are newer), only what rproxy/fastpath/h2.pxi
# uses.  /usr/include/nghttp2/nghttp2.h is the authority.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t

cdef extern from "nghttp2/nghttp2.h" nogil:
    ctypedef struct nghttp2_session
    ctypedef struct nghttp2_session_callbacks
    ctypedef struct nghttp2_option

    enum:
        NGHTTP2_DATA
        NGHTTP2_HEADERS
        NGHTTP2_PRIORITY
        NGHTTP2_RST_STREAM
        NGHTTP2_SETTINGS
        NGHTTP2_PING
        NGHTTP2_GOAWAY
        NGHTTP2_WINDOW_UPDATE
        NGHTTP2_CONTINUATION
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_FLAG_END_HEADERS
        NGHTTP2_FLAG_ACK
        NGHTTP2_NO_ERROR
        NGHTTP2_PROTOCOL_ERROR
        NGHTTP2_INTERNAL_ERROR
        NGHTTP2_REFUSED_STREAM
        NGHTTP2_CANCEL
        NGHTTP2_ENHANCE_YOUR_CALM
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_HEADERS
        NGHTTP2_DATA_FLAG_NONE
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_DATA_FLAG_NO_END_STREAM
        NGHTTP2_NV_FLAG_NONE
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_FLOODED
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        NGHTTP2_SETTINGS_ENABLE_PUSH

    ctypedef struct nghttp2_nv:
        uint8_t* name
        uint8_t* value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        int cat

    ctypedef struct nghttp2_rst_stream:
        nghttp2_frame_hd hd
        uint32_t error_code

    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_goaway goaway

    ctypedef union nghttp2_data_source:
        int fd
        void* ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags,
        nghttp2_data_source* source, void* user_data) noexcept nogil

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef int (*nghttp2_on_frame_recv_callback)(nghttp2_session*, const nghttp2_frame*, void*) noexcept nogil
    ctypedef int (*nghttp2_on_frame_send_callback)(nghttp2_session*, const nghttp2_frame*, void*) noexcept nogil
    ctypedef int (*nghttp2_on_invalid_frame_recv_callback)(nghttp2_session*, const nghttp2_frame*, int,
                                                           void*) noexcept nogil
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(nghttp2_session*, uint8_t, int32_t, const uint8_t*,
                                                        size_t, void*) noexcept nogil
    ctypedef int (*nghttp2_on_stream_close_callback)(nghttp2_session*, int32_t, uint32_t, void*) noexcept nogil
    ctypedef int (*nghttp2_on_begin_headers_callback)(nghttp2_session*, const nghttp2_frame*, void*) noexcept nogil
    ctypedef int (*nghttp2_on_header_callback)(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t,
                                               const uint8_t*, size_t, uint8_t, void*) noexcept nogil
    ctypedef int (*nghttp2_on_invalid_header_callback)(nghttp2_session*, const nghttp2_frame*, const uint8_t*,
                                                       size_t, const uint8_t*, size_t, uint8_t,
                                                       void*) noexcept nogil

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks** cbs)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks* cbs)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(nghttp2_session_callbacks*,
                                                              nghttp2_on_frame_recv_callback)
    void nghttp2_session_callbacks_set_on_frame_send_callback(nghttp2_session_callbacks*,
                                                              nghttp2_on_frame_send_callback)
    void nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(nghttp2_session_callbacks*,
                                                                      nghttp2_on_invalid_frame_recv_callback)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(nghttp2_session_callbacks*,
                                                                   nghttp2_on_data_chunk_recv_callback)
    void nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks*,
                                                                nghttp2_on_stream_close_callback)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(nghttp2_session_callbacks*,
                                                                 nghttp2_on_begin_headers_callback)
    void nghttp2_session_callbacks_set_on_header_callback(nghttp2_session_callbacks*, nghttp2_on_header_callback)
    void nghttp2_session_callbacks_set_on_invalid_header_callback(nghttp2_session_callbacks*,
                                                                  nghttp2_on_invalid_header_callback)

    int nghttp2_option_new(nghttp2_option** opt)
    void nghttp2_option_del(nghttp2_option* opt)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option* opt, int val)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option* opt, size_t val)
    void nghttp2_option_set_max_settings(nghttp2_option* opt, size_t val)
    void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option* opt, uint64_t burst, uint64_t rate)
    void nghttp2_option_set_max_continuations(nghttp2_option* opt, size_t val)

    int nghttp2_session_server_new2(nghttp2_session** s, const nghttp2_session_callbacks* cbs, void* user_data,
                                    const nghttp2_option* opt)
    void nghttp2_session_del(nghttp2_session* s)
    ssize_t nghttp2_session_mem_recv(nghttp2_session* s, const uint8_t* data, size_t n)
    ssize_t nghttp2_session_mem_send(nghttp2_session* s, const uint8_t** data)
    int nghttp2_session_want_read(nghttp2_session* s)
    int nghttp2_session_want_write(nghttp2_session* s)
    void* nghttp2_session_get_stream_user_data(nghttp2_session* s, int32_t stream_id)
    int nghttp2_session_set_stream_user_data(nghttp2_session* s, int32_t stream_id, void* data)
    int nghttp2_session_consume(nghttp2_session* s, int32_t stream_id, size_t n)
    int nghttp2_session_resume_data(nghttp2_session* s, int32_t stream_id)
    int nghttp2_session_terminate_session(nghttp2_session* s, uint32_t error_code)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session* s)
    int nghttp2_session_set_local_window_size(nghttp2_session* s, uint8_t flags, int32_t stream_id,
                                              int32_t window_size)
    int nghttp2_submit_settings(nghttp2_session* s, uint8_t flags, const nghttp2_settings_entry* iv, size_t niv)
    int nghttp2_submit_response(nghttp2_session* s, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen,
                                const nghttp2_data_provider* data_prd)
    int32_t nghttp2_submit_headers(nghttp2_session* s, uint8_t flags, int32_t stream_id, const void* pri_spec,
                                   const nghttp2_nv* nva, size_t nvlen, void* stream_user_data)
    int nghttp2_submit_trailer(nghttp2_session* s, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen)
    int nghttp2_submit_rst_stream(nghttp2_session* s, uint8_t flags, int32_t stream_id, uint32_t error_code)
    int nghttp2_submit_goaway(nghttp2_session* s, uint8_t flags, int32_t last_stream_id, uint32_t error_code,
                              const uint8_t* opaque_data, size_t opaque_data_len)
    const char* nghttp2_strerror(int lib_error_code)
    const char* nghttp2_http2_strerror(uint32_t error_code)
