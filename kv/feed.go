package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The change feed: one record per committed change of user data, keyed by
// (shard, Raft index, sequence within the entry), written in the same
// batch as the change itself:
//
//	S<shard>f<index: 8 bytes BE><seq: 2 bytes BE> → op, time, key, value
//
// The op byte's low two bits are the operation and its high six bits the
// trigger depth of the write (0 for a client's write; records written
// before depths existed read as 0).
//
// Trimming deletes a prefix of the feed and records how far it went
// (meta "feedtrim"), so a reader can tell a position that was trimmed away
// from one where nothing happened.

// Feed operations.
const (
	FeedPut    byte = 1
	FeedDelete byte = 2
)

// FeedRecord is one change in a shard's feed.
type FeedRecord struct {
	Index uint64 // Raft index of the entry that made the change (the put's version)
	Seq   uint16 // position within the entry (batches hold several changes)
	Op    byte   // FeedPut or FeedDelete
	Time  int64  // when the leader appended the entry, Unix nanoseconds
	Depth uint8  // trigger depth of the write, 0..MaxFeedDepth (0: not written by a trigger's handler)
	Key   []byte
	Value []byte // nil for a delete
}

// MaxFeedDepth is the largest depth a feed record holds; deeper writes are
// recorded at it.
const MaxFeedDepth = 63

// ErrCorruptFeed reports a feed record that does not decode.
var ErrCorruptFeed = errors.New("kv: corrupt feed record")

var feedTrimName = []byte("feedtrim")

func feedKey(shard int, index uint64, seq uint16) []byte {
	k := make([]byte, prefixLen+10)
	k[0], k[1], k[2], k[3] = shardTag, byte(shard>>8), byte(shard), kindFeed
	binary.BigEndian.PutUint64(k[prefixLen:], index)
	binary.BigEndian.PutUint16(k[prefixLen+8:], seq)
	return k
}

// encodeFeedValue: op byte, time (8 bytes BE), uvarint key length, key,
// value.
func encodeFeedValue(r FeedRecord) []byte {
	b := make([]byte, 0, 1+8+binary.MaxVarintLen32+len(r.Key)+len(r.Value))
	b = append(b, r.Op|min(r.Depth, MaxFeedDepth)<<2)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	return append(b, r.Value...)
}

func decodeFeed(key, val []byte) (FeedRecord, error) {
	r, k, v, err := decodeFeedParts(key, val)
	if err != nil {
		return r, err
	}
	r.Key = append([]byte(nil), k...)
	if r.Op == FeedPut {
		r.Value = append([]byte{}, v...)
	}
	return r, nil
}

// decodeFeedParts decodes a record's fixed fields and returns its key and
// value as slices of val (not copied).
func decodeFeedParts(key, val []byte) (r FeedRecord, k, v []byte, err error) {
	if len(key) != prefixLen+10 || len(val) < 10 {
		return FeedRecord{}, nil, nil, fmt.Errorf("%w: %d-byte key, %d-byte value", ErrCorruptFeed, len(key), len(val))
	}
	r = FeedRecord{
		Index: binary.BigEndian.Uint64(key[prefixLen:]),
		Seq:   binary.BigEndian.Uint16(key[prefixLen+8:]),
		Op:    val[0] & 3,
		Depth: val[0] >> 2,
		Time:  int64(binary.BigEndian.Uint64(val[1:9])),
	}
	kl, n := binary.Uvarint(val[9:])
	if n <= 0 || kl > uint64(len(val)-9-n) || (r.Op != FeedPut && r.Op != FeedDelete) {
		return FeedRecord{}, nil, nil, fmt.Errorf("%w: index %d", ErrCorruptFeed, r.Index)
	}
	rest := val[9+n:]
	return r, rest[:kl], rest[kl:], nil
}

// AppendFeed records a change in the batch's feed. Index and Seq must be
// unique within the shard; the FSM derives them from the Raft entry.
func (a *Apply) AppendFeed(r FeedRecord) error {
	if err := a.check(); err != nil {
		return err
	}
	if r.Op != FeedPut && r.Op != FeedDelete {
		return fmt.Errorf("kv: append feed: unknown op %d", r.Op)
	}
	if err := a.b.Set(feedKey(a.shard, r.Index, r.Seq), encodeFeedValue(r), nil); err != nil {
		return fmt.Errorf("kv: append feed: %w", err)
	}
	return nil
}

// TrimFeed deletes the shard's feed records with index <= through and
// records through as the trim point (it never moves back).
func (a *Apply) TrimFeed(through uint64) error {
	if err := a.check(); err != nil {
		return err
	}
	cur, err := getUint64(a.b, shardKey(a.shard, kindMeta, feedTrimName))
	if err != nil {
		return err
	}
	if through <= cur {
		return nil
	}
	lo, _ := kindRange(a.shard, kindFeed)
	if err := a.b.DeleteRange(lo, feedKey(a.shard, through+1, 0), nil); err != nil {
		return fmt.Errorf("kv: trim feed: %w", err)
	}
	if err := a.b.Set(shardKey(a.shard, kindMeta, feedTrimName), beBytes(through), nil); err != nil {
		return fmt.Errorf("kv: trim feed: %w", err)
	}
	return nil
}

// FeedFunc receives one feed record; returning false stops the scan.
type FeedFunc func(r FeedRecord) bool

func scanFeed(src iterable, shard int, after uint64, fn FeedFunc) error {
	return scanFeedPrefix(src, shard, after, nil, func(r FeedRecord, _ bool) bool { return fn(r) })
}

// FeedPrefixFunc receives the records ScanFeedPrefix reads: whole for a
// key under the prefix (match), else without Key and Value.
type FeedPrefixFunc func(r FeedRecord, match bool) bool

func scanFeedPrefix(src iterable, shard int, after uint64, prefix []byte, fn FeedPrefixFunc) error {
	lo := feedKey(shard, after+1, 0)
	if after == ^uint64(0) {
		return nil
	}
	_, hi := kindRange(shard, kindFeed)
	it, err := src.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("kv: scan feed: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("kv: scan feed: %w", err)
		}
		r, key, val, err := decodeFeedParts(it.Key(), v)
		if err != nil {
			it.Close()
			return err
		}
		match := bytes.HasPrefix(key, prefix)
		if match {
			r.Key = append([]byte(nil), key...)
			if r.Op == FeedPut {
				r.Value = append([]byte{}, val...)
			}
		}
		if !fn(r, match) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: scan feed: %w", err)
	}
	return nil
}

// ScanFeedPrefix is ScanFeed for the records whose key starts with
// prefix: the others reach fn without their key and value, which are not
// copied (a reader interested in a few keys does not pay for the rest).
func (r *Reader) ScanFeedPrefix(shard int, after uint64, prefix []byte, fn FeedPrefixFunc) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	return scanFeedPrefix(r.snap, shard, after, prefix, fn)
}

// ScanFeed calls fn for each feed record of shard with index > after, in
// (index, seq) order.
func (e *Engine) ScanFeed(shard int, after uint64, fn FeedFunc) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	return scanFeed(e.db, shard, after, fn)
}

// ScanFeed is Engine.ScanFeed as of the view.
func (r *Reader) ScanFeed(shard int, after uint64, fn FeedFunc) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	return scanFeed(r.snap, shard, after, fn)
}

// LastFeedIndex returns the index of the shard's last feed record with
// index <= through (0: none): one seek, whatever the feed holds.
func (e *Engine) LastFeedIndex(shard int, through uint64) (uint64, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	lo, hi := kindRange(shard, kindFeed)
	if through < ^uint64(0) {
		hi = feedKey(shard, through+1, 0)
	}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, fmt.Errorf("kv: last feed index: %w", err)
	}
	var index uint64
	if it.Last() {
		if k := it.Key(); len(k) == prefixLen+10 {
			index = binary.BigEndian.Uint64(k[prefixLen:])
		}
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("kv: last feed index: %w", err)
	}
	return index, nil
}

// FeedTrimmed returns the index through which the shard's feed was
// trimmed (0: never).
func (e *Engine) FeedTrimmed(shard int) (uint64, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	return getUint64(e.db, shardKey(shard, kindMeta, feedTrimName))
}

// FeedTrimmed is Engine.FeedTrimmed as of the view.
func (r *Reader) FeedTrimmed(shard int) (uint64, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	return getUint64(r.snap, shardKey(shard, kindMeta, feedTrimName))
}
