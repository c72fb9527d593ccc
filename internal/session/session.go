package session

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// Header is the HTTP header that carries a token.
const Header = "X-Session"

// MaxShards bounds the shard ids a token may name.
const MaxShards = 1 << 16

// maxEncoded bounds the encoded length Decode accepts (a full token for
// MaxShards shards fits well within it).
const maxEncoded = 1 << 20

const (
	prefix  = "s1."
	version = 1
)

// ErrInvalid is returned (wrapped) for a token that does not decode.
var ErrInvalid = errors.New("session: invalid token")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Token maps shard id to the highest Raft index observed for that shard.
// The zero value (nil) is an empty token.
type Token map[int]uint64

// Observe raises the index recorded for shard to at least index.
func (t *Token) Observe(shard int, index uint64) {
	if index == 0 {
		return
	}
	if *t == nil {
		*t = Token{}
	}
	if index > (*t)[shard] {
		(*t)[shard] = index
	}
}

// Merge returns a new token holding, per shard, the maximum of t and o.
func (t Token) Merge(o Token) Token {
	out := make(Token, len(t)+len(o))
	for s, i := range t {
		out[s] = i
	}
	for s, i := range o {
		if i > out[s] {
			out[s] = i
		}
	}
	return out
}

// Index returns the index recorded for shard (0 when none).
func (t Token) Index(shard int) uint64 { return t[shard] }

// Covers reports whether t records at least everything o records.
func (t Token) Covers(o Token) bool {
	for s, i := range o {
		if t[s] < i {
			return false
		}
	}
	return true
}

// Encode returns the token's opaque string form; an empty token encodes as "".
func (t Token) Encode() string {
	shards := make([]int, 0, len(t))
	for s, i := range t {
		if i > 0 {
			shards = append(shards, s)
		}
	}
	if len(shards) == 0 {
		return ""
	}
	sort.Ints(shards)
	buf := make([]byte, 0, 2+len(shards)*8+4)
	buf = append(buf, version)
	buf = binary.AppendUvarint(buf, uint64(len(shards)))
	for _, s := range shards {
		buf = binary.AppendUvarint(buf, uint64(s))
		buf = binary.AppendUvarint(buf, t[s])
	}
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	return prefix + base64.RawURLEncoding.EncodeToString(buf)
}

// String implements fmt.Stringer.
func (t Token) String() string { return t.Encode() }

// Decode parses a token produced by Encode. The empty string decodes to an
// empty token. Any other malformed input returns an error wrapping ErrInvalid.
func Decode(s string) (Token, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxEncoded {
		return nil, fmt.Errorf("%w: too long", ErrInvalid)
	}
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("%w: unknown format", ErrInvalid)
	}
	buf, err := base64.RawURLEncoding.DecodeString(s[len(prefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(buf) < 1+1+4 {
		return nil, fmt.Errorf("%w: truncated", ErrInvalid)
	}
	body, sum := buf[:len(buf)-4], binary.BigEndian.Uint32(buf[len(buf)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrInvalid)
	}
	if body[0] != version {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrInvalid, body[0])
	}
	p := body[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n == 0 || n > MaxShards {
		return nil, fmt.Errorf("%w: bad shard count", ErrInvalid)
	}
	p = p[k:]
	t := make(Token, n)
	last := -1
	for i := uint64(0); i < n; i++ {
		s, k1 := binary.Uvarint(p)
		if k1 <= 0 {
			return nil, fmt.Errorf("%w: truncated", ErrInvalid)
		}
		p = p[k1:]
		idx, k2 := binary.Uvarint(p)
		if k2 <= 0 {
			return nil, fmt.Errorf("%w: truncated", ErrInvalid)
		}
		p = p[k2:]
		if s >= MaxShards || int(s) <= last || idx == 0 {
			return nil, fmt.Errorf("%w: bad entry", ErrInvalid)
		}
		last = int(s)
		t[int(s)] = idx
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrInvalid)
	}
	return t, nil
}
