"""Configuration text for tests: the 1.x shape most tests need (one server,
one downstream, no vhosts), with room for the directives a test is about."""
from __future__ import annotations


def server_block(port, ds_port, *, addr="127.0.0.1", connections=2, extra="", ds_extra=""):
    """A 1.x `server` on addr:port with one downstream on 127.0.0.1:ds_port."""
    return f"""
server {{
    addr = {addr}
    port = {port}
    {extra}
    downstream {{
        addr = 127.0.0.1
        port = {ds_port}
        connections = {connections}
        {ds_extra}
    }}
}}
"""


def one_downstream(port, ds_port, *, workers=1, main="", **server):
    """A whole config: top-level `workers` and `main`, then server_block()."""
    return f"workers = {workers}\n{main}\n" + server_block(port, ds_port, **server)


def named_downstreams(port, downstreams, *, lb=None, workers=1, main="", server_extra=""):
    """A 2.x server: named downstreams ({name: "addr = ... port = ..."}) and
    one catch-all vhost whose one rule uses them all, in that order."""
    blocks = "\n".join(f"    downstream {name} {{ {body} }}" for name, body in downstreams.items())
    names = ", ".join(downstreams)
    method = f"  lb-method = {lb}" if lb else ""
    return f"""workers = {workers}
{main}
server {{
    addr = 127.0.0.1
    port = {port}
    {server_extra}
{blocks}
    vhost "*" {{ rule all {{ uri-prefix = "/"  downstreams = {{ {names} }}{method} }} }}
}}
"""


def one_rule(port, ds_port, *, rule="", server="", ds="", main="", workers=1):
    """A 2.x server: downstream `d` (one connection) on 127.0.0.1:ds_port
    behind one catch-all rule, with room for directives at each level."""
    return f"""
workers = {workers}
{main}
server {{
    addr = 127.0.0.1
    port = {port}
    {server}
    downstream d {{ addr = 127.0.0.1  port = {ds_port}  connections = 1  {ds} }}
    vhost "*" {{ rule all {{ uri-prefix = "/"  downstreams = {{ d }}  {rule} }} }}
}}
"""
