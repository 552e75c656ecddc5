"""PII redaction: e-mail, IPv4/IPv6, phone numbers, credit cards, replaced by typed placeholders.

Regexes find candidates, validators cut false positives: IP addresses must parse and be globally
routable (as datatrove's PIIFormatter: private and documentation ranges stay), card numbers must
pass the Luhn check and start like a card (3-6), phone numbers need separators or a leading "+"
so bare IDs and years are left alone. Placeholders use Presidio's entity names.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

from lmforge.data.curate.config import PIIConfig

PLACEHOLDERS = {
    "email": "<EMAIL_ADDRESS>",
    "ip": "<IP_ADDRESS>",
    "phone": "<PHONE_NUMBER>",
    "credit_card": "<CREDIT_CARD>",
}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_CARD = re.compile(r"(?<![\d-])[3-6]\d{3}(?:[ -]?\d{2,4}){2,4}(?![\d-])")
# +CC then groups, or (NNN) NNN-NNNN / NNN-NNN-NNNN / NNN.NNN.NNNN (NANP-style).
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _global_ip(s: str) -> bool:
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


class Redactor:
    def __init__(self, cfg: PIIConfig):
        self.allow = set(cfg.allow)
        self.allow_domains = {d.lower() for d in cfg.allow_domains}
        steps = []  # cards before phones: a card number also looks like phone groups
        if cfg.email:
            steps.append(("email", _EMAIL, self._email_ok))
        if cfg.credit_card:
            steps.append(("credit_card", _CARD, self._card_ok))
        if cfg.ip:
            steps.append(("ip", _IPV4, _global_ip))
            steps.append(("ip", _IPV6, lambda s: s.count(":") >= 2 and _global_ip(s)))
        if cfg.phone:
            steps.append(("phone", _PHONE, self._phone_ok))
        self.steps = steps

    def _email_ok(self, s: str) -> bool:
        return s.rsplit("@", 1)[1].lower() not in self.allow_domains

    @staticmethod
    def _card_ok(s: str) -> bool:
        digits = re.sub(r"\D", "", s)
        return 13 <= len(digits) <= 19 and luhn_ok(digits)

    @staticmethod
    def _phone_ok(s: str) -> bool:
        return 7 <= sum(c.isdigit() for c in s) <= 15

    def __call__(self, text: str, counts: Counter) -> str:
        for kind, pattern, valid in self.steps:
            if kind == "email" and "@" not in text:
                continue

            def sub(m: re.Match, kind=kind, valid=valid) -> str:
                s = m.group(0)
                if s in self.allow or not valid(s):
                    return s
                counts[kind] += 1
                return PLACEHOLDERS[kind]

            text = pattern.sub(sub, text)
        return text
