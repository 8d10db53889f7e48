"""MAIL and RCPT addresses: the listeners' fast path for ``<local@domain>``
(sendmsg/smtp.py) reads every address exactly as aiosmtpd's RFC 5322 parser does, and
leaves every other form to that parser."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from sendmsg.smtp import SIMPLE_ANGLE_ADDRESS, PlatformSMTP

FAST = [
    "<a@b.c>",
    "<a@b.c> SIZE=100 BODY=8BITMIME",
    " <news@acme.test>",
    "<first.last+tag@sub.example.com>",
    "<a@b>",
    "<A@B.C>",
    "<a@xn--bcher-kva.example>",
    "<a@b-c.d>",
    "<a@b.c>x",
    "<a@b.c>  ",
    "<a@b.c>\tSIZE=1",
    "<a@b.c>  \t BODY=8BITMIME SMTPUTF8",
    "<a@b.c>\r\n",
]
OTHER = [
    "<>",
    "<a..b@c.d>",
    "<.a@c.d>",
    "<a@-c.d>",
    '<"q u"@c.d>',
    "<a@[127.0.0.1]>",
    "<@r.o:a@b.c>",
    "a@b.c",
    "<a@b.c",
    "<ä@b.c>",
    "<a@b.c.>",
    "<a@b..c>",
    "<a b@c.d>",
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>(x)",
]


class Handler:
    pass


@pytest.mark.parametrize("arg", FAST + OTHER)
def test_an_address_reads_as_aiosmtpd_reads_it(arg):
    assert PlatformSMTP(Handler())._getaddr(arg) == SMTP(Handler())._getaddr(arg)


@pytest.mark.parametrize("arg", FAST)
def test_the_common_forms_take_the_fast_path(arg):
    assert SIMPLE_ANGLE_ADDRESS.fullmatch(arg)


@pytest.mark.parametrize("arg", OTHER)
def test_other_forms_go_to_aiosmtpds_parser(arg):
    assert not SIMPLE_ANGLE_ADDRESS.fullmatch(arg)


@pytest.mark.parametrize("local", ["x" * 64, "x" * 65])
def test_the_local_part_limit_holds_on_the_fast_path(local):
    """aiosmtpd's class attribute (0: no limit); a server that sets it gets it here too."""
    ours, theirs = PlatformSMTP(Handler()), SMTP(Handler())
    ours.local_part_limit = theirs.local_part_limit = 64
    got = ours._getaddr(f"<{local}@b.c>")
    assert got == theirs._getaddr(f"<{local}@b.c>")
    assert got == ((None, None) if len(local) > 64 else (f"{local}@b.c", ""))
