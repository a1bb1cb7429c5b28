#!/usr/bin/env python3
"""Independent check of the Tally protocol test vectors (docs/protocol.md §8).

Everything here is implemented from docs/protocol.md alone, with the Python 3
standard library only (hashlib, unicodedata, struct, json): the canonical-serial
rule (§2.3), the item leaf encoding (§2.4), the item order (§2.5), the RFC 6962
Merkle tree hash and inclusion proofs (§3), the header encoding, digest (§4),
the receipt encoding (§5.2), and Ed25519 signing and verification (RFC 8032,
after the reference code of its §6; slow, not constant time: for checking
vectors only, never for real keys).

Usage: python3 docs/examples/tally_vectors.py [docs/protocol.md]
Reads every ```vector block, recomputes each expected value from the inputs,
prints what it checked, and exits 1 on any mismatch or if vectors are missing
(2 if the document cannot be read).

Needs Python 3.7 or later. Unicode: this relies on the Python build's
unicodedata tables (3.11 has Unicode 14); the vectors use only characters
assigned long before that.
"""

import hashlib
import json
import os
import re
import struct
import sys
import unicodedata

# ---------------------------------------------------------------------------
# §2.3 canonical-serial rule (default configuration)
# ---------------------------------------------------------------------------

FOLD = dict(
    zip(
        "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0406\u0408\u0405\u04ae",
        "ABEKMHOPCTXIJSY",
    )
)
# Lower-case forms too, for a character-at-a-time reading of step 3.
FOLD.update({k.lower(): v for k, v in list(FOLD.items())})

WHITESPACE = (
    {chr(c) for c in range(0x09, 0x0E)}
    | {" ", "\u0085", "\u00a0", "\u1680"}
    | {chr(c) for c in range(0x2000, 0x200B)}
    | {"\u2028", "\u2029", "\u202f", "\u205f", "\u3000"}
    | {"\u200b", "\u2060", "\ufeff"}
)
HYPHENS = {
    "-",
    "\u00ad",
    "\u058a",
    "\u2010",
    "\u2011",
    "\u2012",
    "\u2013",
    "\u2014",
    "\u2015",
    "\u2212",
}


def canonical(raw):
    s = unicodedata.normalize("NFKC", raw)  # step 1: NFKC, drop removables, NFKC
    s = "".join(c for c in s if c not in WHITESPACE and c not in HYPHENS)
    s = unicodedata.normalize("NFKC", s)
    s = s.upper()  # step 2
    s = "".join(FOLD.get(c, c) for c in s)  # step 3
    s = "".join(c for c in s if c not in WHITESPACE and c not in HYPHENS)  # step 4
    return unicodedata.normalize("NFKC", s)  # step 5


# ---------------------------------------------------------------------------
# §2.2, §2.4, §2.5 items
# ---------------------------------------------------------------------------

STATUS = {
    "in_service": 1,
    "in_storage": 2,
    "transferred_out": 3,
    "expended": 4,
    "destroyed": 5,
    "lost": 6,
}


def is_state_code(s):
    return len(s) == 3 and all("A" <= c <= "Z" for c in s)


def put_str(s):
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def make_item(model, serial, status, site, counterparty):
    """Validates the raw fields (§2.1) and returns (key, leaf)."""
    if status not in STATUS:
        raise ValueError("unknown status %r" % status)
    if (status == "transferred_out") != (counterparty != ""):
        raise ValueError("counterparty rule broken")
    if counterparty and not is_state_code(counterparty):
        raise ValueError("bad counterparty %r" % counterparty)
    cm, cs = canonical(model), canonical(serial)
    if not cm or not cs:
        raise ValueError("empty canonical model or serial")
    leaf = (
        b"\x01"
        + put_str(cm)
        + put_str(cs)
        + put_str(model)
        + put_str(serial)
        + bytes([STATUS[status]])
        + put_str(site)
        + put_str(counterparty)
    )
    return (cm, cs), leaf


def sort_key(key_and_leaf):
    (cm, cs), leaf = key_and_leaf
    return (cm.encode("utf-8"), cs.encode("utf-8"), leaf)


# ---------------------------------------------------------------------------
# §3 Merkle tree
# ---------------------------------------------------------------------------


def sha256(b):
    return hashlib.sha256(b).digest()


def leaf_hash(leaf):
    return sha256(b"\x00" + leaf)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def split(n):
    return 1 << ((n - 1).bit_length() - 1)  # largest power of two < n


def mth_of_hashes(hashes):
    n = len(hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return hashes[0]
    k = split(n)
    return node_hash(mth_of_hashes(hashes[:k]), mth_of_hashes(hashes[k:]))


def audit_path(m, hashes):
    n = len(hashes)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return audit_path(m, hashes[:k]) + [mth_of_hashes(hashes[k:])]
    return audit_path(m - k, hashes[k:]) + [mth_of_hashes(hashes[:k])]


def verify_inclusion(lh, index, tree_size, path, root):
    if index >= tree_size:
        return False
    fn, sn, r = index, tree_size - 1, lh
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ---------------------------------------------------------------------------
# §4 header, §5.2 receipt
# ---------------------------------------------------------------------------

HEADER_DOMAIN = b"tally/v1/snapshot-header\x00"
RECEIPT_DOMAIN = b"tally/v1/receipt\x00"


def encode_header(state, sequence, as_of, previous, count, root):
    out = (
        HEADER_DOMAIN
        + state.encode("ascii")
        + struct.pack(">Qq", sequence, as_of)
        + previous
        + struct.pack(">Q", count)
        + root
    )
    assert len(out) == 116
    return out


def encode_receipt(state, sequence, digest, accepted_at):
    out = (
        RECEIPT_DOMAIN
        + state.encode("ascii")
        + struct.pack(">Q", sequence)
        + digest
        + struct.pack(">q", accepted_at)
    )
    assert len(out) == 68
    return out


# ---------------------------------------------------------------------------
# Ed25519, RFC 8032 (pure), after the reference implementation of its §6.
# ---------------------------------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _sha512_int(b):
    return int.from_bytes(hashlib.sha512(b).digest(), "little")


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _equal(p, q):
    x1, y1, z1, _ = p
    x2, y2, z2, _ = q
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
G = (_GX, _GY, 1, _GX * _GY % P)


def _compress(p):
    x, y, z, _ = p
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(b):
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _expand(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public(seed):
    a, _ = _expand(seed)
    return _compress(_mul(a, G))


def ed25519_sign(seed, msg):
    a, prefix = _expand(seed)
    A = _compress(_mul(a, G))
    r = _sha512_int(prefix + msg) % L
    R = _compress(_mul(r, G))
    k = _sha512_int(R + A + msg) % L
    s = (r + k * a) % L
    return R + int.to_bytes(s, 32, "little")


def _small_order(p):
    return _equal(_mul(8, p), (0, 1, 1, 0))


def ed25519_verify_strict(public, msg, sig):
    """Cofactorless, canonical S, no small-order R or A (§4.4)."""
    if len(public) != 32 or len(sig) != 64:
        return False
    A = _decompress(public)
    R = _decompress(sig[:32])
    if A is None or R is None or _small_order(A) or _small_order(R):
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    k = _sha512_int(sig[:32] + public + msg) % L
    # R' = [s]B - [k]A, compared as its 32-byte encoding.
    neg_a = ((P - A[0]) % P, A[1], A[2], (P - A[3]) % P)
    r_check = _add(_mul(s, G), _mul(k, neg_a))
    return _compress(r_check) == sig[:32]


# ---------------------------------------------------------------------------
# Reading the vectors
# ---------------------------------------------------------------------------

BLOCK = re.compile(r"^```vector[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def parse_blocks(text):
    blocks = []
    for m in BLOCK.finditer(text):
        body = m.group(1)
        if not body.isascii():
            raise ValueError("a vector block contains non-ASCII characters")
        lines = []
        for line in body.split("\n"):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("vector line without ':': %r" % line)
            lines.append((name.strip(), value.strip()))
        blocks.append(lines)
    return blocks


def json_values(text):
    """Parses whitespace-separated JSON values."""
    dec = json.JSONDecoder()
    out, i = [], 0
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i == len(text):
            return out
        value, i = dec.raw_decode(text, i)
        out.append(value)


class Checker:
    def __init__(self):
        self.checked = 0
        self.failed = 0

    def eq(self, what, got, expected):
        self.checked += 1
        if got != expected:
            self.failed += 1
            if isinstance(got, bytes):
                got = got.hex()
            if isinstance(expected, bytes):
                expected = expected.hex()
            print("MISMATCH %s:\n  computed %r\n  document %r" % (what, got, expected))

    def true(self, what, cond):
        self.eq(what, bool(cond), True)


def one(block, name):
    values = [v for k, v in block if k == name]
    if len(values) != 1:
        raise ValueError("expected exactly one %r line, found %d" % (name, len(values)))
    return values[0]


def check_keys(c, block):
    keys = {}
    for who in ("state", "coordinator"):
        seed = bytes.fromhex(one(block, who + "_seed"))
        public = bytes.fromhex(one(block, who + "_public_key"))
        c.eq("keys: %s public key" % who, ed25519_public(seed), public)
        keys[who] = (seed, public)
    return keys


def check_canonical(c, block):
    n = 0
    for name, value in block:
        if name != "case":
            continue
        raw, expected = json_values(value)
        got = canonical(raw)
        c.eq("canonical(%r)" % raw, got, expected)
        c.eq("canonical is idempotent on %r" % expected, canonical(expected), expected)
        n += 1
    return n


def check_snapshot(c, block, keys, chain):
    state = one(block, "state")
    sequence = int(one(block, "sequence"))
    as_of = int(one(block, "as_of_unix_ms"))
    previous = bytes.fromhex(one(block, "previous_digest"))
    where = "%s %d" % (state, sequence)

    items = []  # dicts in input order
    for name, value in block:
        if name == "item":
            items.append({"item": json.loads(value)})
        elif name in ("key", "leaf", "leaf_hash"):
            items[-1][name] = value
    built = []
    for i, it in enumerate(items):
        key, leaf = make_item(*it["item"])
        c.eq("%s item %d key" % (where, i), list(key), json.loads(it["key"]))
        c.eq("%s item %d leaf" % (where, i), leaf.hex(), it["leaf"])
        c.eq("%s item %d leaf hash" % (where, i), leaf_hash(leaf).hex(), it["leaf_hash"])
        built.append((key, leaf))

    order = sorted(range(len(built)), key=lambda i: sort_key(built[i]))
    expected_order = [int(x) for x in one(block, "order").split()]
    c.eq("%s order" % where, order, expected_order)
    hashes = [leaf_hash(built[i][1]) for i in order]
    root = mth_of_hashes(hashes)
    c.eq("%s item_count" % where, len(built), int(one(block, "item_count")))
    c.eq("%s items_root" % where, root.hex(), one(block, "items_root"))

    if sequence == 1:
        c.eq("%s previous digest is zero" % where, previous, bytes(32))
    elif (state, sequence - 1) in chain:
        c.eq("%s chains to %d" % (where, sequence - 1), previous, chain[(state, sequence - 1)][0])

    header = encode_header(state, sequence, as_of, previous, len(built), root)
    c.eq("%s header" % where, header.hex(), one(block, "header"))
    digest = sha256(header)
    c.eq("%s digest" % where, digest.hex(), one(block, "digest"))
    seed, public = keys["state"]
    sig = ed25519_sign(seed, header)
    c.eq("%s signature" % where, sig.hex(), one(block, "signature"))
    c.true("%s signature verifies" % where, ed25519_verify_strict(public, header, sig))

    accepted_at = int(one(block, "accepted_at_unix_ms"))
    receipt = encode_receipt(state, sequence, digest, accepted_at)
    c.eq("%s receipt" % where, receipt.hex(), one(block, "receipt"))
    cseed, cpublic = keys["coordinator"]
    rsig = ed25519_sign(cseed, receipt)
    c.eq("%s receipt signature" % where, rsig.hex(), one(block, "receipt_signature"))
    c.true("%s receipt signature verifies" % where, ed25519_verify_strict(cpublic, receipt, rsig))
    chain[(state, sequence)] = (digest, hashes, root)


def check_proof(c, block, chain):
    state = one(block, "state")
    sequence = int(one(block, "sequence"))
    index = int(one(block, "leaf_index"))
    size = int(one(block, "tree_size"))
    lh = bytes.fromhex(one(block, "leaf_hash"))
    path = [bytes.fromhex(v) for k, v in block if k == "path"]
    root = bytes.fromhex(one(block, "root"))
    where = "proof %s %d leaf %d" % (state, sequence, index)
    c.true("%s verifies" % where, verify_inclusion(lh, index, size, path, root))
    c.true("%s fails for another index" % where, not verify_inclusion(lh, index ^ 1, size, path, root))
    _, hashes, snap_root = chain[(state, sequence)]
    c.eq("%s tree size" % where, size, len(hashes))
    c.eq("%s root" % where, root, snap_root)
    c.eq("%s leaf hash" % where, lh, hashes[index])
    c.eq("%s path" % where, [p.hex() for p in path], [p.hex() for p in audit_path(index, hashes)])


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    path = argv[1] if len(argv) > 1 else os.path.join(here, "..", "protocol.md")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        blocks = parse_blocks(text)
    except (OSError, ValueError) as e:
        print("cannot read the vectors: %s" % e)
        return 2
    c = Checker()
    counts = {"keys": 0, "canonical": 0, "snapshot": 0, "proof": 0}
    keys, chain, cases = None, {}, 0
    try:
        for block in blocks:
            kind = one(block, "kind")
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "keys":
                keys = check_keys(c, block)
            elif kind == "canonical":
                cases += check_canonical(c, block)
            elif kind == "snapshot":
                if keys is None:
                    raise ValueError("a snapshot block comes before the keys block")
                check_snapshot(c, block, keys, chain)
            elif kind == "proof":
                check_proof(c, block, chain)
            else:
                raise ValueError("unknown vector kind %r" % kind)
    except (ValueError, KeyError, IndexError) as e:
        print("malformed vectors: %r" % (e,))
        return 1
    if counts["keys"] != 1 or cases < 10 or counts["snapshot"] < 2 or counts["proof"] < 1:
        print("too few vectors: %r, %d canonical cases" % (counts, cases))
        return 1
    print(
        "%s: %d blocks (%d snapshots, %d proofs, %d canonical cases), %d checks, %d mismatches"
        % (path, len(blocks), counts["snapshot"], counts["proof"], cases, c.checked, c.failed)
    )
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
