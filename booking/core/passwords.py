"""Password policy: pure rules returning every problem at once."""

from __future__ import annotations

from booking.core.errors import Problem

MIN_LENGTH = 10
MAX_LENGTH = 128

# The most common passwords and the obvious local ones; a short list is enough to refuse the worst choices.
_COMMON = {
    "123456", "123456789", "12345678", "password", "qwerty", "1234567890", "111111", "1234567", "000000",
    "abc123", "password1", "iloveyou", "qwerty123", "1q2w3e4r", "admin", "admin123", "welcome", "letmein",
    "woaini1314", "5201314", "a123456", "aa123456", "123123", "666666", "888888", "88888888", "qq123456",
    "password123", "1234567890a", "qwertyuiop", "asdfghjkl", "zxcvbnm", "passw0rd", "p@ssw0rd", "changeme",
    "sichuan123", "chengdu123", "1qaz2wsx", "1qaz2wsx3edc", "abcd1234", "abcdefghij", "0123456789",
}


def password_problems(password: str, *, field: str = "password", email: str | None = None) -> list[Problem]:
    problems: list[Problem] = []
    if len(password) < MIN_LENGTH:
        problems.append(Problem(field, "too_short", f"密码至少需要 {MIN_LENGTH} 个字符"))
    if len(password) > MAX_LENGTH:
        problems.append(Problem(field, "too_long", f"密码不能超过 {MAX_LENGTH} 个字符"))
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) <= 2:
        problems.append(Problem(field, "too_common", "密码过于常见，请换一个更难猜的密码"))
    if email and lowered == email.lower().split("@")[0]:
        problems.append(Problem(field, "same_as_email", "密码不能与邮箱用户名相同"))
    return problems
