"""Reliability and security suites for h2ochat: faults, fuzzing, bad input, load and crashes.

The fast versions run inside ``pytest`` (``tests/test_reliability_*.py``); the long
versions run with ``python -m reliability`` and print a table of figures.

    faultserver   a chat-ui double on raw asyncio streams: any fault at any byte
    proxies       HTTP and SOCKS5 proxies that refuse, stall or tunnel
    tls           throw-away self-signed certificates
    faults        one client call against one fault, judged (exception, time, leaks)
    catalogue     the named client faults and the exact outcome each must give
    matrix        the random fault matrix
    junk          random and malformed requests for the server
    badinput      sending them over raw sockets, and judging the answers
    ownership     another session guessing conversation ids
    cookies       the session cookie over HTTP and HTTPS
    process       the server in a child process (launch, kill -9, SIGTERM, restart)
    launcher      that child process's entry point
    load          many concurrent streams against it
    crash         kill -9, SIGTERM and a failing backend during open streams
    report        the table of figures and the JSON file
    suites        the long versions, one function per suite
"""

from __future__ import annotations

__all__: list[str] = []
