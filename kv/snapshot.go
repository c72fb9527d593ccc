package kv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Shard snapshot stream format:
//
//	magic "LDBSNAP1"
//	repeated: uvarint len(key) > 0, key (kind byte + suffix), uvarint len(value), value
//	uvarint 0
//	CRC-32C (big-endian) of every preceding byte
//
// Keys are relative to the shard, so a snapshot restores into any shard id.
const snapMagic = "LDBSNAP1"

// maxSnapKey and maxSnapValue bound entries a restore accepts.
const (
	maxSnapKey   = 1 << 16
	maxSnapValue = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ShardSnapshot is a point-in-time view of one shard's replicated state.
type ShardSnapshot struct {
	snap  *pebble.Snapshot
	shard int
}

// SnapshotShard captures shard's replicated state as of now. The caller
// must Close it.
func (e *Engine) SnapshotShard(shard int) (*ShardSnapshot, error) {
	if err := checkShard(shard); err != nil {
		return nil, err
	}
	return &ShardSnapshot{snap: e.db.NewSnapshot(), shard: shard}, nil
}

// Applied returns the applied index the snapshot holds.
func (s *ShardSnapshot) Applied() (uint64, error) {
	return getUint64(s.snap, shardKey(s.shard, kindMeta, appliedName))
}

// RaftMeta returns the applied index, its term and the ConfState held by the
// snapshot (all from the same Pebble snapshot as the data). The ConfState is
// empty, not nil, when none was recorded. A raft snapshot message for this
// data must carry exactly this metadata (RaftStorage.StageSnapshot checks
// it).
func (s *ShardSnapshot) RaftMeta() (index, term uint64, cs *pb.ConfState, err error) {
	return loadAppliedState(s.snap, s.shard)
}

// WriteTo streams the snapshot to w in the snapshot format.
func (s *ShardSnapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w, h: crc32.New(castagnoli)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	var hdr [2 * binary.MaxVarintLen64]byte
	if _, err := bw.WriteString(snapMagic); err != nil {
		return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
	}
	for _, kind := range replicatedKinds {
		lo, hi := kindRange(s.shard, kind)
		it, err := s.snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
		}
		for valid := it.First(); valid; valid = it.Next() {
			k := it.Key()[prefixLen-1:] // kind byte + suffix
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
			}
			n := binary.PutUvarint(hdr[:], uint64(len(k)))
			bw.Write(hdr[:n])
			bw.Write(k)
			n = binary.PutUvarint(hdr[:], uint64(len(v)))
			bw.Write(hdr[:n])
			if _, err := bw.Write(v); err != nil {
				it.Close()
				return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
			}
		}
		if err := it.Close(); err != nil {
			return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
		}
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], cw.h.Sum32())
	if _, err := w.Write(sum[:]); err != nil {
		return cw.n, fmt.Errorf("kv: write snapshot: %w", err)
	}
	return cw.n + 4, nil
}

// Close releases the snapshot.
func (s *ShardSnapshot) Close() error { return s.snap.Close() }

type countingWriter struct {
	w io.Writer
	h hash.Hash32
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	// Hash before writing: w may scribble on p once it has the data. If the
	// write falls short the stream is broken anyway (WriteTo fails).
	c.h.Write(p)
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type hashingReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (h *hashingReader) ReadByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err == nil {
		h.h.Write([]byte{b})
	}
	return b, err
}

func (h *hashingReader) readFull(p []byte) error {
	if _, err := io.ReadFull(h.r, p); err != nil {
		return err
	}
	h.h.Write(p)
	return nil
}

// RestoreShard replaces shard's replicated state with the snapshot read from
// r. Nothing changes unless the whole stream is read and verified; the
// replacement is one synced batch.
func (e *Engine) RestoreShard(shard int, r io.Reader) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	b := e.db.NewBatch()
	defer b.Close()
	for _, kind := range replicatedKinds {
		lo, hi := kindRange(shard, kind)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return fmt.Errorf("kv: restore: %w", err)
		}
	}
	err := readShardSnapshot(r, shard, func(key, val []byte) error {
		if err := b.Set(key, val, nil); err != nil {
			return fmt.Errorf("kv: restore: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	return nil
}

// readShardSnapshot reads and verifies the snapshot stream r, calling set
// with every entry of the stream in stream order, keyed into shard (both slices
// are freshly allocated and may be retained). On an error the entries passed so far must be discarded.
func readShardSnapshot(r io.Reader, shard int, set func(key, val []byte) error) error {
	hr := &hashingReader{r: bufio.NewReaderSize(r, 256<<10), h: crc32.New(castagnoli)}
	magic := make([]byte, len(snapMagic))
	if err := hr.readFull(magic); err != nil || string(magic) != snapMagic {
		return fmt.Errorf("%w: bad header", ErrBadSnapshot)
	}
	for {
		klen, err := binary.ReadUvarint(hr)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if klen == 0 {
			break
		}
		if klen > maxSnapKey {
			return fmt.Errorf("%w: key of %d bytes", ErrBadSnapshot, klen)
		}
		key := make([]byte, prefixLen-1+int(klen))
		key[0], key[1], key[2] = shardTag, byte(shard>>8), byte(shard)
		if err := hr.readFull(key[prefixLen-1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if !isReplicatedKind(key[prefixLen-1]) {
			return fmt.Errorf("%w: unexpected key kind %q", ErrBadSnapshot, key[prefixLen-1])
		}
		vlen, err := binary.ReadUvarint(hr)
		if err != nil || vlen > maxSnapValue {
			return fmt.Errorf("%w: bad value length", ErrBadSnapshot)
		}
		val := make([]byte, vlen)
		if err := hr.readFull(val); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if err := set(key, val); err != nil {
			return err
		}
	}
	want := hr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(hr.r, sum[:]); err != nil {
		return fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := hr.r.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing bytes", ErrBadSnapshot)
	}
	return nil
}

func isReplicatedKind(k byte) bool {
	for _, r := range replicatedKinds {
		if r == k {
			return true
		}
	}
	return false
}
