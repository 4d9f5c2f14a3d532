# llhttp's C API (llhttp.h from the PyPI package llhttp==9.3.0.0).
# The symbols come from the package's extension module `__llhttp`, which
# rproxy.fastpath loads with RTLD_GLOBAL before importing the fast path.
from libc.stdint cimport uint8_t, uint16_t, uint64_t, int32_t

cdef extern from "llhttp.h" nogil:
    ctypedef struct llhttp_t:
        int32_t error
        const char* reason
        const char* error_pos
        void* data
        uint64_t content_length
        uint8_t type
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t header_state
        uint16_t lenient_flags
        uint8_t upgrade
        uint8_t finish
        uint16_t flags
        uint16_t status_code

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length)
    ctypedef int (*llhttp_cb)(llhttp_t*)

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_protocol
        llhttp_data_cb on_url
        llhttp_data_cb on_status
        llhttp_data_cb on_method
        llhttp_data_cb on_version
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_data_cb on_chunk_extension_name
        llhttp_data_cb on_chunk_extension_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_protocol_complete
        llhttp_cb on_url_complete
        llhttp_cb on_status_complete
        llhttp_cb on_method_complete
        llhttp_cb on_version_complete
        llhttp_cb on_header_field_complete
        llhttp_cb on_header_value_complete
        llhttp_cb on_chunk_extension_name_complete
        llhttp_cb on_chunk_extension_value_complete
        llhttp_cb on_chunk_header
        llhttp_cb on_chunk_complete
        llhttp_cb on_reset

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_INTERNAL
        HPE_STRICT
        HPE_CR_EXPECTED
        HPE_LF_EXPECTED
        HPE_UNEXPECTED_CONTENT_LENGTH
        HPE_UNEXPECTED_SPACE
        HPE_CLOSED_CONNECTION
        HPE_INVALID_METHOD
        HPE_INVALID_URL
        HPE_INVALID_CONSTANT
        HPE_INVALID_VERSION
        HPE_INVALID_HEADER_TOKEN
        HPE_INVALID_CONTENT_LENGTH
        HPE_INVALID_CHUNK_SIZE
        HPE_INVALID_STATUS
        HPE_INVALID_EOF_STATE
        HPE_INVALID_TRANSFER_ENCODING
        HPE_PAUSED
        HPE_PAUSED_UPGRADE
        HPE_PAUSED_H2_UPGRADE
        HPE_USER

    ctypedef enum llhttp_type_t:
        HTTP_BOTH
        HTTP_REQUEST
        HTTP_RESPONSE

    enum:
        F_CONNECTION_KEEP_ALIVE
        F_CONNECTION_CLOSE
        F_CONNECTION_UPGRADE
        F_CHUNKED
        F_UPGRADE
        F_CONTENT_LENGTH
        F_SKIPBODY
        F_TRAILING
        F_TRANSFER_ENCODING

    enum:
        HTTP_DELETE
        HTTP_GET
        HTTP_HEAD
        HTTP_POST
        HTTP_PUT
        HTTP_CONNECT
        HTTP_OPTIONS
        HTTP_TRACE

    void llhttp_init(llhttp_t* parser, llhttp_type_t type, const llhttp_settings_t* settings)
    void llhttp_settings_init(llhttp_settings_t* settings)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t len)
    llhttp_errno_t llhttp_finish(llhttp_t* parser)
    void llhttp_reset(llhttp_t* parser)
    int llhttp_message_needs_eof(const llhttp_t* parser)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    void llhttp_pause(llhttp_t* parser)
    void llhttp_resume(llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    llhttp_errno_t llhttp_get_errno(const llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    const char* llhttp_errno_name(llhttp_errno_t err)
    const char* llhttp_method_name(uint8_t method)
    uint8_t llhttp_get_method(llhttp_t* parser)
    int llhttp_get_status_code(llhttp_t* parser)
    uint8_t llhttp_get_upgrade(llhttp_t* parser)
