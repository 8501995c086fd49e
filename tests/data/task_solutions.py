"""Trusted reference solutions for the shipped task bank, keyed by task_id.

Only the tests use these: each bank task's tests must pass against its reference here and fail
against a trivially wrong function, which proves the bank's tests are neither wrong nor vacuous.
"""

from __future__ import annotations

SOLUTIONS: dict[str, str] = {
    "bank/001_add_numbers": """\
def add_numbers(a, b):
    return a + b
""",
    "bank/002_reverse_string": """\
def reverse_string(s):
    return s[::-1]
""",
    "bank/003_count_vowels": """\
def count_vowels(s):
    return sum(1 for ch in s.lower() if ch in "aeiou")
""",
    "bank/004_is_even": """\
def is_even(n):
    return n % 2 == 0
""",
    "bank/005_max_of_list": """\
def max_of_list(xs):
    if not xs:
        return None
    return max(xs)
""",
    "bank/006_square": """\
def square(n):
    return n * n
""",
    "bank/007_sum_list": """\
def sum_list(xs):
    total = 0
    for x in xs:
        total += x
    return total
""",
    "bank/008_swap_pairs": """\
def swap_pairs(xs):
    out = list(xs)
    for i in range(0, len(out) - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out
""",
    "bank/009_first_element": """\
def first_element(xs):
    return xs[0] if xs else None
""",
    "bank/010_celsius_to_fahrenheit": """\
def celsius_to_fahrenheit(c):
    return c * 9 / 5 + 32
""",
    "bank/011_count_words": """\
def count_words(s):
    return len(s.split())
""",
    "bank/012_is_positive": """\
def is_positive(n):
    return n > 0
""",
    "bank/013_min_of_two": """\
def min_of_two(a, b):
    return a if a <= b else b
""",
    "bank/014_absolute_value": """\
def absolute_value(n):
    return -n if n < 0 else n
""",
    "bank/015_to_uppercase": """\
def to_uppercase(s):
    return s.upper()
""",
    "bank/016_count_occurrences": """\
def count_occurrences(xs, target):
    return sum(1 for x in xs if x == target)
""",
    "bank/017_factorial": """\
def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result
""",
    "bank/018_average": """\
def average(xs):
    if not xs:
        return 0.0
    return sum(xs) / len(xs)
""",
    "bank/019_repeat_string": """\
def repeat_string(s, n):
    return s * n if n > 0 else ""
""",
    "bank/020_last_char": """\
def last_char(s):
    return s[-1] if s else ""
""",
    "bank/021_is_divisible": """\
def is_divisible(a, b):
    return a % b == 0
""",
    "bank/022_double_list": """\
def double_list(xs):
    return [2 * x for x in xs]
""",
    "bank/023_fizzbuzz_word": """\
def fizzbuzz_word(n):
    if n % 15 == 0:
        return "FizzBuzz"
    if n % 3 == 0:
        return "Fizz"
    if n % 5 == 0:
        return "Buzz"
    return str(n)
""",
    "bank/024_count_uppercase": """\
def count_uppercase(s):
    return sum(1 for ch in s if ch.isupper())
""",
    "bank/025_running_total": """\
def running_total(xs):
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out
""",
    "bank/026_char_frequency": """\
def char_frequency(s):
    counts = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return counts
""",
    "bank/027_longest_word": """\
def longest_word(sentence):
    best = ""
    for word in sentence.split():
        if len(word) > len(best):
            best = word
    return best
""",
    "bank/028_capitalize_words": """\
def capitalize_words(s):
    return " ".join(part[:1].upper() + part[1:].lower() for part in s.split(" "))
""",
    "bank/029_is_anagram": """\
def is_anagram(a, b):
    def key(s):
        return sorted(s.replace(" ", "").lower())
    return key(a) == key(b)
""",
    "bank/030_flatten": """\
def flatten(nested):
    out = []
    for item in nested:
        if isinstance(item, list):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out
""",
    "bank/031_fibonacci": """\
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
""",
    "bank/032_gcd": """\
def gcd(a, b):
    a, b = abs(a), abs(b)
    while b:
        a, b = b, a % b
    return a
""",
    "bank/033_is_leap_year": """\
def is_leap_year(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
""",
    "bank/034_digit_sum": """\
def digit_sum(n):
    return sum(int(d) for d in str(abs(n)))
""",
    "bank/035_binary_to_int": """\
def binary_to_int(s):
    if not s or any(ch not in "01" for ch in s):
        raise ValueError(f"not a binary string: {s!r}")
    value = 0
    for ch in s:
        value = value * 2 + (ch == "1")
    return value
""",
    "bank/036_int_to_roman": """\
def int_to_roman(n):
    table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
             (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = []
    for value, symbol in table:
        while n >= value:
            out.append(symbol)
            n -= value
    return "".join(out)
""",
    "bank/037_roman_to_int": """\
def roman_to_int(s):
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for i, ch in enumerate(s):
        v = values[ch]
        if i + 1 < len(s) and values[s[i + 1]] > v:
            total -= v
        else:
            total += v
    return total
""",
    "bank/038_run_length_encode": """\
def run_length_encode(s):
    out = []
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out.append(s[i] if j - i == 1 else f"{s[i]}{j - i}")
        i = j
    return "".join(out)
""",
    "bank/039_compress_ranges": """\
def compress_ranges(xs):
    out = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return out
""",
    "bank/040_merge_intervals": """\
def merge_intervals(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
""",
    "bank/041_two_sum_indices": """\
def two_sum_indices(xs, target):
    first_index = {}
    for j, x in enumerate(xs):
        if target - x in first_index:
            return (first_index[target - x], j)
        first_index.setdefault(x, j)
    return None
""",
    "bank/042_balanced_brackets": """\
def balanced_brackets(s):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack
""",
    "bank/043_rotate_list": """\
def rotate_list(xs, k):
    if not xs:
        return []
    k %= len(xs)
    return xs[-k:] + xs[:-k] if k else list(xs)
""",
    "bank/044_chunk_list": """\
def chunk_list(xs, size):
    if size < 1:
        raise ValueError("size must be at least 1")
    return [xs[i:i + size] for i in range(0, len(xs), size)]
""",
    "bank/045_transpose": """\
def transpose(matrix):
    if not matrix:
        return []
    return [[row[c] for row in matrix] for c in range(len(matrix[0]))]
""",
    "bank/046_count_islands": """\
def count_islands(grid):
    seen = set()
    islands = 0
    for r in range(len(grid)):
        for c in range(len(grid[r])):
            if grid[r][c] != "#" or (r, c) in seen:
                continue
            islands += 1
            stack = [(r, c)]
            seen.add((r, c))
            while stack:
                y, x = stack.pop()
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < len(grid) and 0 <= nx < len(grid[ny]) and grid[ny][nx] == "#" and (ny, nx) not in seen:
                        seen.add((ny, nx))
                        stack.append((ny, nx))
    return islands
""",
    "bank/047_shortest_path_grid": """\
def shortest_path_grid(grid):
    rows, cols = len(grid), len(grid[0])
    if grid[0][0] == "#" or grid[rows - 1][cols - 1] == "#":
        return -1
    dist = {(0, 0): 0}
    queue = [(0, 0)]
    head = 0
    while head < len(queue):
        r, c = queue[head]
        head += 1
        if (r, c) == (rows - 1, cols - 1):
            return dist[(r, c)]
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] == "." and (nr, nc) not in dist:
                dist[(nr, nc)] = dist[(r, c)] + 1
                queue.append((nr, nc))
    return -1
""",
    "bank/048_parse_key_values": """\
def parse_key_values(s):
    out = {}
    for entry in s.split(";"):
        if not entry.strip():
            continue
        if "=" not in entry:
            raise ValueError(f"entry without '=': {entry!r}")
        key, value = entry.split("=", 1)
        if not key.strip():
            raise ValueError(f"empty key in {entry!r}")
        out[key.strip()] = value.strip()
    return out
""",
    "bank/049_evaluate_rpn": """\
def evaluate_rpn(tokens):
    stack = []
    for tok in tokens:
        if tok in ("+", "-", "*", "/"):
            if len(stack) < 2:
                raise ValueError("operator without two operands")
            b = stack.pop()
            a = stack.pop()
            if tok == "+":
                stack.append(a + b)
            elif tok == "-":
                stack.append(a - b)
            elif tok == "*":
                stack.append(a * b)
            else:
                q = abs(a) // abs(b)
                stack.append(q if (a >= 0) == (b >= 0) else -q)
        else:
            stack.append(int(tok))
    if len(stack) != 1:
        raise ValueError("malformed expression")
    return stack[0]
""",
    "bank/050_second_largest": """\
def second_largest(xs):
    distinct = sorted(set(xs))
    return distinct[-2] if len(distinct) >= 2 else None
""",
    "bank/051_missing_number": """\
def missing_number(xs):
    n = len(xs)
    return n * (n + 1) // 2 - sum(xs)
""",
    "bank/052_caesar_cipher": """\
def caesar_cipher(s, shift):
    out = []
    for ch in s:
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - 97 + shift) % 26 + 97))
        elif "A" <= ch <= "Z":
            out.append(chr((ord(ch) - 65 + shift) % 26 + 65))
        else:
            out.append(ch)
    return "".join(out)
""",
    "bank/053_camel_to_snake": """\
def camel_to_snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
""",
    "bank/054_snake_to_camel": """\
def snake_to_camel(name):
    parts = [p.lower() for p in name.split("_") if p]
    if not parts:
        return ""
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
""",
    "bank/055_group_by_length": """\
def group_by_length(words):
    groups = {}
    for word in words:
        groups.setdefault(len(word), []).append(word)
    return groups
""",
    "bank/056_invert_dict": """\
def invert_dict(d):
    out = {}
    for key, value in d.items():
        out.setdefault(value, []).append(key)
    return {value: sorted(keys) for value, keys in out.items()}
""",
    "bank/057_merge_sorted_lists": """\
def merge_sorted_lists(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]
""",
    "bank/058_sort_by_frequency": """\
def sort_by_frequency(xs):
    counts = {}
    for x in xs:
        counts[x] = counts.get(x, 0) + 1
    return sorted(xs, key=lambda x: (-counts[x], x))
""",
    "bank/059_pascal_row": """\
def pascal_row(n):
    row = [1]
    for _ in range(n):
        row = [1] + [row[i] + row[i + 1] for i in range(len(row) - 1)] + [1]
    return row
""",
    "bank/060_is_subsequence": """\
def is_subsequence(sub, s):
    i = 0
    for ch in s:
        if i < len(sub) and sub[i] == ch:
            i += 1
    return i == len(sub)
""",
    "bank/061_longest_common_prefix": """\
def longest_common_prefix(words):
    if not words:
        return ""
    prefix = words[0]
    for word in words[1:]:
        while not word.startswith(prefix):
            prefix = prefix[:-1]
    return prefix
""",
    "bank/062_max_subarray_sum": """\
def max_subarray_sum(xs):
    if not xs:
        return 0
    best = current = xs[0]
    for x in xs[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
""",
    "bank/063_climb_stairs": """\
def climb_stairs(n):
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b
    return a
""",
    "bank/064_valid_ipv4": """\
def valid_ipv4(s):
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not part or not all("0" <= ch <= "9" for ch in part):
            return False
        if len(part) > 1 and part[0] == "0":
            return False
        if int(part) > 255:
            return False
    return True
""",
    "bank/065_binary_search": """\
def binary_search(xs, target):
    lo, hi = 0, len(xs) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if xs[mid] == target:
            return mid
        if xs[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
""",
    "bank/066_next_greater_elements": """\
def next_greater_elements(xs):
    result = [-1] * len(xs)
    stack = []
    for i, x in enumerate(xs):
        while stack and xs[stack[-1]] < x:
            result[stack.pop()] = x
        stack.append(i)
    return result
""",
    "bank/067_word_wrap": """\
def word_wrap(text, width):
    lines = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
""",
    "bank/068_top_k_words": """\
def top_k_words(text, k):
    counts = {}
    word = ""
    for ch in text.lower() + " ":
        if "a" <= ch <= "z":
            word += ch
        elif word:
            counts[word] = counts.get(word, 0) + 1
            word = ""
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return ranked[:k]
""",
    "bank/069_parse_duration": """\
def parse_duration(s):
    units = {"h": 3600, "m": 60, "s": 1}
    order = "hms"
    total = 0
    last = -1
    digits = ""
    if not s:
        raise ValueError("empty duration")
    for ch in s:
        if ch in "0123456789":
            digits += ch
        elif ch in units:
            if not digits or order.index(ch) <= last:
                raise ValueError(f"invalid duration: {s!r}")
            last = order.index(ch)
            total += int(digits) * units[ch]
            digits = ""
        else:
            raise ValueError(f"invalid character {ch!r} in {s!r}")
    if digits:
        raise ValueError(f"number without a unit in {s!r}")
    return total
""",
    "bank/070_min_meeting_rooms": """\
def min_meeting_rooms(meetings):
    events = []
    for start, end in meetings:
        events.append((start, 1))
        events.append((end, -1))
    events.sort()
    rooms = best = 0
    for _, delta in events:
        rooms += delta
        best = max(best, rooms)
    return best
""",
    "bank/071_edit_distance": """\
def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
""",
    "bank/072_longest_increasing_subsequence": """\
def longest_increasing_subsequence(xs):
    best = []
    for i, x in enumerate(xs):
        length = 1
        for j in range(i):
            if xs[j] < x:
                length = max(length, best[j] + 1)
        best.append(length)
    return max(best, default=0)
""",
    "bank/073_evaluate_expression": """\
def evaluate_expression(expr):
    tokens = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == " ":
            i += 1
        elif ch in "0123456789":
            j = i
            while j < len(expr) and expr[j] in "0123456789":
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        elif ch in "+-*()":
            tokens.append(ch)
            i += 1
        else:
            raise ValueError(f"unexpected character {ch!r}")
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of expression")
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take()
        if tok == "(":
            value = additive()
            if take() != ")":
                raise ValueError("expected ')'")
            return value
        if isinstance(tok, int):
            return tok
        raise ValueError(f"unexpected token {tok!r}")

    def term():
        value = atom()
        while peek() == "*":
            take()
            value *= atom()
        return value

    def additive():
        value = term()
        while peek() in ("+", "-"):
            op = take()
            rhs = term()
            value = value + rhs if op == "+" else value - rhs
        return value

    result = additive()
    if pos != len(tokens):
        raise ValueError("trailing tokens")
    return result
""",
    "bank/074_count_n_queens": """\
def count_n_queens(n):
    def place(row, cols, diag1, diag2):
        if row == n:
            return 1
        total = 0
        for c in range(n):
            if c in cols or row + c in diag1 or row - c in diag2:
                continue
            total += place(row + 1, cols | {c}, diag1 | {row + c}, diag2 | {row - c})
        return total
    return place(0, frozenset(), frozenset(), frozenset())
""",
    "bank/075_topological_order": """\
def topological_order(deps):
    names = set(deps)
    for ds in deps.values():
        names.update(ds)
    remaining = {name: set(deps.get(name, [])) for name in names}
    order = []
    while remaining:
        ready = sorted(name for name, ds in remaining.items() if not ds)
        if not ready:
            raise ValueError("dependency cycle")
        name = ready[0]
        order.append(name)
        del remaining[name]
        for ds in remaining.values():
            ds.discard(name)
    return order
""",
    "bank/076_count_subset_sums": """\
def count_subset_sums(xs, target):
    ways = {0: 1}
    for x in xs:
        nxt = dict(ways)
        for total, count in ways.items():
            nxt[total + x] = nxt.get(total + x, 0) + count
        ways = nxt
    return ways.get(target, 0)
""",
    "bank/077_spiral_order": """\
def spiral_order(matrix):
    out = []
    if not matrix:
        return out
    top, bottom, left, right = 0, len(matrix) - 1, 0, len(matrix[0]) - 1
    while top <= bottom and left <= right:
        for c in range(left, right + 1):
            out.append(matrix[top][c])
        for r in range(top + 1, bottom + 1):
            out.append(matrix[r][right])
        if top < bottom:
            for c in range(right - 1, left - 1, -1):
                out.append(matrix[bottom][c])
        if left < right:
            for r in range(bottom - 1, top, -1):
                out.append(matrix[r][left])
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return out
""",
    "bank/078_flood_fill": """\
def flood_fill(grid, row, col, fill):
    cells = [list(line) for line in grid]
    old = cells[row][col]
    if old == fill:
        return list(grid)
    stack = [(row, col)]
    cells[row][col] = fill
    while stack:
        r, c = stack.pop()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < len(cells) and 0 <= nc < len(cells[nr]) and cells[nr][nc] == old:
                cells[nr][nc] = fill
                stack.append((nr, nc))
    return ["".join(line) for line in cells]
""",
    "bank/079_decode_nested_repeat": """\
def decode_nested_repeat(s):
    stack = []
    current = ""
    number = 0
    for ch in s:
        if ch.isdigit():
            number = number * 10 + int(ch)
        elif ch == "[":
            stack.append((current, number))
            current, number = "", 0
        elif ch == "]":
            prefix, k = stack.pop()
            current = prefix + current * k
        else:
            current += ch
    return current
""",
    "bank/080_interval_intersection": """\
def interval_intersection(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
""",
    "bank/081_min_coins": """\
def min_coins(coins, amount):
    best = [0] + [-1] * amount
    for total in range(1, amount + 1):
        options = [best[total - c] for c in coins if c <= total and best[total - c] >= 0]
        best[total] = min(options) + 1 if options else -1
    return best[amount]
""",
}
