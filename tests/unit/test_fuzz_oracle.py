"""The fuzz harness's judge (tests/fuzz/fuzz_proxy.py), without sockets: it
must reject what the issue-23 bugs produced and accept a faithful relay, and
a case must be the same bytes every time for the same seed and number."""
import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("fuzz_proxy", os.path.join(HERE, "..", "fuzz", "fuzz_proxy.py"))
fz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_proxy"] = fz          # dataclasses look their module up
_spec.loader.exec_module(fz)

SENT = (b"HTTP/1.1 200 OK\r\nX-First: 1111\r\nX-Split: aaaabbbb\r\nX-Last: 2222\r\n"
        b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\nok")


def a_case(methods=(b"GET",), **kw):
    c = fz.Case(seed=1, number=0, methods=list(methods), **kw)
    c.client = [(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 0)]
    c.decoded = [b"ok"]
    return c


def test_a_faithful_relay_passes():
    relayed = (b"HTTP/1.1 200 OK\r\nX-First: 1111\r\nX-Split: aaaabbbb\r\nX-Last: 2222\r\n"
               b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    assert fz.check_client_side(a_case(), relayed, [SENT]) == []


def test_the_proxys_own_error_response_passes():
    assert fz.check_client_side(a_case(), fz.canned(502, True), [SENT]) == []


def test_the_split_head_garbling_of_issue_23_fails():
    garbled = b"HTTP/1.1 200  2\r\n2\r\nCont: t-Le\r\nth: 2\r\n: okaa\r\n\r\n"
    problems = fz.check_client_side(a_case(), garbled, [SENT])
    assert problems and any("status line" in p or "header" in p for p in problems)


def test_heap_bytes_in_a_body_fail():
    leaked = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\x00\x91"
    problems = fz.check_client_side(a_case(), leaked, [SENT])
    assert any("body the downstream did not send" in p for p in problems)


def test_a_header_the_downstream_did_not_send_fails_even_with_byte_edits():
    got = b"HTTP/1.1 200 OK\r\nX-Nowhere: 1\r\nContent-Length: 2\r\n\r\nok"
    assert fz.check_client_side(a_case(), got, [SENT])
    assert fz.check_client_side(a_case(mutated_ds=True), got, [SENT])


def test_bytes_that_are_not_http_fail():
    assert fz.check_client_side(a_case(), b"\x00\x01garbage\r\n\r\n", [SENT])


def test_a_request_trailer_arriving_as_a_header_fails():
    class Ds:
        errors = []
        tunnel_in = b""
        received = [b"POST /a HTTP/1.1\r\nHost: h\r\nTxyz: 1\r\nContent-Length: 0\r\n\r\n"]

    c = a_case(methods=[b"POST"])
    c.client = [(b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTxyz: 1\r\n\r\n", 0)]
    c.trailer_names = [b"txyz"]
    assert any("trailer" in p for p in fz.check_downstream_side(c, Ds))
    Ds.received = [b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTxyz: 1\r\n\r\n"]
    assert fz.check_downstream_side(c, Ds) == []


def test_chunked_responses_with_extensions_and_trailers_parse():
    data = (b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;a=1\r\nabc\r\n0;last\r\nX-T: 1\r\n\r\n")
    rs, problem = fz.parse_responses(data, [b"GET"])
    assert problem is None and [r.status for r in rs] == [103, 200] and rs[1].data == b"abc"
    assert fz.parse_responses(data[:-3], [b"GET"])[1] == "incomplete"


@pytest.mark.parametrize("number", [0, 1, 17, 123])
def test_a_case_is_the_same_bytes_for_the_same_seed_and_number(number):
    corpus = fz.load_corpus(os.path.join(HERE, "..", "fuzz", "corpus"))
    a, b = fz.gen_case(1, number, corpus), fz.gen_case(1, number, corpus)
    assert a.client == b.client and a.plans == b.plans
    assert fz.gen_case(2, number, corpus).client != a.client


def test_the_buffer_filling_answer_cuts_the_final_head_at_the_buffer_end():
    corpus = fz.load_corpus(os.path.join(HERE, "..", "fuzz", "corpus"))
    seen = 0
    for n in range(400):
        case = fz.gen_case(1, n, corpus)
        if "1xx up to a full buffer" not in case.notes or case.mutated_ds:
            continue
        pieces = case.plans[-1][0]
        if len(pieces[0][0]) != fz.BUFFER:
            continue                            # an early close cut it shorter
        first = pieces[0][0]
        part = first[first.rindex(b"\r\n\r\n") + 4:]           # the final head's first bytes
        assert 1 <= len(part) <= 40 and part[:5] == b"HTTP/"[:len(part)], part
        assert pieces[1][1] > 0                                 # then a pause
        seen += 1
    assert seen


def test_a_dechunked_body_after_byte_edits_is_judged_by_runs_of_sent_bytes():
    sent = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"]
    streams = fz.Streams(sent)
    assert fz.dechunked_from(b"hello world", streams)
    assert not fz.dechunked_from(b"hello\x00\x91orld", streams)


def test_any_status_in_the_proxys_canned_shape_is_its_own_response():
    own = (b"HTTP/1.1 417 Expectation Failed\r\nServer: rproxy\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 23\r\nConnection: close\r\n\r\n417 Expectation Failed\n")
    assert fz.check_client_side(a_case(), own, [SENT]) == []
    assert fz.check_client_side(a_case(), own.replace(b"23\r\n", b"24\r\n") + b"x", [SENT])
