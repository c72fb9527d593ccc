package changefeed

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// ErrBadCursor is a cursor that does not decode or does not fit the
// cluster: malformed, or ahead of the cluster's log (Feed.CheckCursor).
var ErrBadCursor = errors.New("changefeed: bad cursor")

// Cursor is a position in every shard's feed: Cursor[s] is the Raft index
// of shard s through which the reader has seen every change (absent = 0).
type Cursor map[int]uint64

const (
	cursorPrefix = "c1."
	maxCursorLen = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns the cursor's opaque text form: "c1." and base64url of
// (uvarint count, then shard and position uvarint pairs in shard order,
// then a CRC-32C of those bytes).
func (c Cursor) Encode() string {
	shards := make([]int, 0, len(c))
	for s := range c {
		shards = append(shards, s)
	}
	sort.Ints(shards)
	buf := binary.AppendUvarint(nil, uint64(len(shards)))
	for _, s := range shards {
		buf = binary.AppendUvarint(buf, uint64(s))
		buf = binary.AppendUvarint(buf, c[s])
	}
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(buf)
}

// DecodeCursor parses a cursor made for a cluster of shards shards.
func DecodeCursor(s string, shards int) (Cursor, error) {
	if len(s) > maxCursorLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCursor, len(s))
	}
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: want the %q prefix", ErrBadCursor, cursorPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < 5 {
		return nil, fmt.Errorf("%w: not base64url", ErrBadCursor)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadCursor)
	}
	n, k := binary.Uvarint(body)
	if k <= 0 || n > uint64(shards) {
		return nil, fmt.Errorf("%w: bad shard count", ErrBadCursor)
	}
	body = body[k:]
	c := make(Cursor, n)
	last := -1
	for i := uint64(0); i < n; i++ {
		sh, k1 := binary.Uvarint(body)
		if k1 <= 0 {
			return nil, fmt.Errorf("%w: truncated", ErrBadCursor)
		}
		pos, k2 := binary.Uvarint(body[k1:])
		if k2 <= 0 {
			return nil, fmt.Errorf("%w: truncated", ErrBadCursor)
		}
		body = body[k1+k2:]
		if sh >= uint64(shards) || int(sh) <= last {
			return nil, fmt.Errorf("%w: shard %d out of order or range (the cluster has %d)", ErrBadCursor, sh, shards)
		}
		last = int(sh)
		c[int(sh)] = pos
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrBadCursor)
	}
	return c, nil
}
