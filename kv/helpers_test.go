package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// openEngine opens an Engine in dir on fs. The caller closes it.
func openEngine(t testing.TB, fs vfs.FS, dir string) *Engine {
	t.Helper()
	e, err := Open(Config{Dir: dir, FS: fs})
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	return e
}

// newEngine opens an Engine on a fresh in-memory filesystem and closes it
// when the test ends.
func newEngine(t testing.TB) *Engine {
	t.Helper()
	e := openEngine(t, vfs.NewMem(), "db")
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// kvPair is one user record of a shard.
type kvPair struct {
	Key     string
	Value   string
	Version uint64
}

func (p kvPair) String() string {
	v := p.Value
	if len(v) > 40 {
		v = fmt.Sprintf("%s...(%d bytes)", v[:40], len(v))
	}
	return fmt.Sprintf("%q=%q@%d", p.Key, v, p.Version)
}

// apply runs fn inside an Apply of shard and commits it at applied.
func apply(t testing.TB, e *Engine, shard int, applied uint64, fn func(a *Apply)) {
	t.Helper()
	a := e.NewApply(shard)
	if fn != nil {
		fn(a)
	}
	if err := a.Commit(applied); err != nil {
		t.Fatalf("Commit(%d) shard %d: %v", applied, shard, err)
	}
}

// put commits pairs into shard at applied.
func put(t testing.TB, e *Engine, shard int, applied uint64, pairs ...kvPair) {
	t.Helper()
	apply(t, e, shard, applied, func(a *Apply) {
		for _, p := range pairs {
			if err := a.Put([]byte(p.Key), []byte(p.Value), p.Version); err != nil {
				t.Fatalf("Put(%q): %v", p.Key, err)
			}
		}
	})
}

type scanner interface {
	Scan(shard int, start, end []byte, fn ScanFunc) error
}

// scanAll returns every record of shard in [start, end).
func scanAll(t testing.TB, s scanner, shard int, start, end []byte) []kvPair {
	t.Helper()
	var out []kvPair
	err := s.Scan(shard, start, end, func(k, v []byte, ver uint64) bool {
		out = append(out, kvPair{string(k), string(v), ver})
		return true
	})
	if err != nil {
		t.Fatalf("Scan(%d, %q, %q): %v", shard, start, end, err)
	}
	return out
}

type recordGetter interface {
	Get(shard int, key []byte) (Record, bool, error)
}

// wantRecord checks that key in shard holds value at version.
func wantRecord(t testing.TB, g recordGetter, shard int, key, value string, version uint64) {
	t.Helper()
	rec, ok, err := g.Get(shard, []byte(key))
	if err != nil || !ok {
		t.Fatalf("Get(%d, %q) = ok %v, err %v; want %q@%d", shard, key, ok, err, value, version)
	}
	if string(rec.Value) != value || rec.Version != version {
		t.Fatalf("Get(%d, %q) = %q@%d; want %q@%d", shard, key, rec.Value, rec.Version, value, version)
	}
}

// wantAbsent checks that key is not in shard.
func wantAbsent(t testing.TB, g recordGetter, shard int, key string) {
	t.Helper()
	rec, ok, err := g.Get(shard, []byte(key))
	if err != nil {
		t.Fatalf("Get(%d, %q): %v", shard, key, err)
	}
	if ok {
		t.Fatalf("Get(%d, %q) = %q@%d; want absent", shard, key, rec.Value, rec.Version)
	}
}

type appliedGetter interface {
	Applied(shard int) (uint64, error)
}

func wantApplied(t testing.TB, g appliedGetter, shard int, want uint64) {
	t.Helper()
	got, err := g.Applied(shard)
	if err != nil {
		t.Fatalf("Applied(%d): %v", shard, err)
	}
	if got != want {
		t.Fatalf("Applied(%d) = %d; want %d", shard, got, want)
	}
}

// rawEntry is one raw Pebble key/value.
type rawEntry struct{ K, V string }

// dumpAll returns every raw key/value of the engine, in key order. It is
// used only to compare whole-engine state before and after an operation.
func dumpAll(t testing.TB, e *Engine) []rawEntry {
	t.Helper()
	it, err := e.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []rawEntry
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rawEntry{string(it.Key()), string(v)})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpShard returns the raw entries of shard with the shard id stripped from
// the keys, so that two shards' dumps can be compared.
func dumpShard(t testing.TB, e *Engine, shard int) []rawEntry {
	t.Helper()
	lo := []byte{shardTag, byte(shard >> 8), byte(shard)}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		t.Fatal(err)
	}
	var out []rawEntry
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, rawEntry{string(it.Key()[prefixLen-1:]), string(it.Value())})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func diffEntries(a, b []rawEntry) string {
	if slices.Equal(a, b) {
		return ""
	}
	return fmt.Sprintf("\n got %d entries: %q\nwant %d entries: %q", len(a), a, len(b), b)
}

// snapEntry is one entry of a hand-built snapshot stream: kind byte, suffix
// and value.
type snapEntry struct {
	Kind   byte
	Suffix string
	Value  string
}

// buildSnapshot encodes entries in the documented shard snapshot format,
// independently of ShardSnapshot.WriteTo.
func buildSnapshot(entries ...snapEntry) []byte {
	var b []byte
	b = append(b, "LDBSNAP1"...)
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(1+len(e.Suffix)))
		b = append(b, e.Kind)
		b = append(b, e.Suffix...)
		b = binary.AppendUvarint(b, uint64(len(e.Value)))
		b = append(b, e.Value...)
	}
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// withCRC replaces the last four bytes of b by the CRC-32C of the rest.
func withCRC(b []byte) []byte {
	b = bytes.Clone(b[:len(b)-4])
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func record(version uint64, value string) string { return string(encodeRecord(version, []byte(value))) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
