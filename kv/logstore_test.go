package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

func TestLogStoreEmpty(t *testing.T) {
	e := newEngine(t)
	s := logStore(t, e, 1)
	wantBounds(t, s, 0, 0)
	for _, idx := range []uint64{0, 1, math.MaxUint64} {
		var l raft.Log
		if err := s.GetLog(idx, &l); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) on empty store = %v; want raft.ErrLogNotFound", idx, err)
		}
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Fatalf("StoreLogs(nil): %v", err)
	}
	wantBounds(t, s, 0, 0)
}

// roundTripLogs exercises every field of raft.Log.
func roundTripLogs() []*raft.Log {
	big := make([]byte, 100<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	return []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("hello"), Extensions: []byte("ext"),
			AppendedAt: time.Unix(1700000000, 123456789)},
		{Index: 2, Term: math.MaxUint64, Type: raft.LogConfiguration}, // nil Data, nil Extensions, zero AppendedAt
		{Index: 3, Term: 2, Type: raft.LogNoop, Data: []byte{}, Extensions: []byte{}},
		{Index: 4, Term: 2, Type: raft.LogBarrier, Data: big, Extensions: []byte{0, 0xff, 0}},
		{Index: 5, Term: 3, Type: raft.LogCommand, Data: []byte{0}, AppendedAt: time.Unix(-5, 7)}, // before 1970
		{Index: 6, Term: 3, Type: raft.LogCommand, Data: []byte("now"), AppendedAt: time.Now()},   // monotonic reading
		{Index: 7, Term: 1 << 63, Type: raft.LogType(255), Data: []byte("x"),
			AppendedAt: time.Date(2262, 1, 1, 0, 0, 0, 1, time.FixedZone("odd", 3600+17))},
		{Index: 8, Term: 0, Type: raft.LogCommand, Extensions: []byte("only ext"),
			AppendedAt: time.Unix(0, 1)},
	}
}

// wantStored is what GetLog must return for l: equal in every field, with
// empty Data or Extensions normalised to nil.
func wantStored(l *raft.Log) *raft.Log {
	w := *l
	if len(w.Data) == 0 {
		w.Data = nil
	}
	if len(w.Extensions) == 0 {
		w.Extensions = nil
	}
	return &w
}

func checkGetLog(t testing.TB, s *LogStore, want *raft.Log) {
	t.Helper()
	// Start from a dirty Log: GetLog must overwrite every field.
	got := raft.Log{Index: 999, Term: 999, Type: raft.LogAddPeerDeprecated, Data: []byte("stale"),
		Extensions: []byte("stale"), AppendedAt: time.Unix(42, 42)}
	if err := s.GetLog(want.Index, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", want.Index, err)
	}
	w := wantStored(want)
	if !logsEqual(&got, w) || (got.Data == nil) != (w.Data == nil) || (got.Extensions == nil) != (w.Extensions == nil) {
		t.Fatalf("GetLog(%d) =\n %s\nwant\n %s", want.Index, fmtLog(&got), fmtLog(w))
	}
}

func TestLogStoreRoundTrip(t *testing.T) {
	logs := roundTripLogs()

	t.Run("StoreLogs", func(t *testing.T) {
		e := newEngine(t)
		s := logStore(t, e, 1)
		storeLogs(t, s, logs)
		wantBounds(t, s, 1, uint64(len(logs)))
		for _, l := range logs {
			t.Run(fmt.Sprint(l.Index), func(t *testing.T) { checkGetLog(t, s, l) })
		}
	})

	t.Run("StoreLog", func(t *testing.T) {
		e := newEngine(t)
		s := logStore(t, e, 1)
		for i, l := range logs {
			if err := s.StoreLog(l); err != nil {
				t.Fatal(err)
			}
			wantBounds(t, s, 1, uint64(i+1))
		}
		for _, l := range logs {
			checkGetLog(t, s, l)
		}
	})

	t.Run("caller may reuse the Log after StoreLogs", func(t *testing.T) {
		e := newEngine(t)
		s := logStore(t, e, 1)
		l := &raft.Log{Index: 1, Term: 1, Data: []byte("abc")}
		storeLogs(t, s, []*raft.Log{l})
		l.Data[0] = 'X'
		checkGetLog(t, s, &raft.Log{Index: 1, Term: 1, Data: []byte("abc")})
	})

	t.Run("overwrite", func(t *testing.T) {
		e := newEngine(t)
		s := logStore(t, e, 1)
		storeLogs(t, s, makeLogs(1, 5, 1))
		storeLogs(t, s, makeLogs(3, 4, 2))
		wantBounds(t, s, 1, 5)
		checkGetLog(t, s, makeLogs(3, 3, 2)[0])
		checkGetLog(t, s, makeLogs(5, 5, 1)[0])
	})
}

func TestLogStoreGetMissing(t *testing.T) {
	e := newEngine(t)
	s := logStore(t, e, 1)
	storeLogs(t, s, makeLogs(5, 10, 1))
	storeLogs(t, s, makeLogs(20, 21, 1)) // a gap 11..19
	for _, idx := range []uint64{0, 1, 4, 11, 19, 22, math.MaxUint64} {
		var l raft.Log
		if err := s.GetLog(idx, &l); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) = %v; want raft.ErrLogNotFound", idx, err)
		}
	}
	for _, idx := range []uint64{5, 10, 20, 21} {
		checkGetLog(t, s, makeLogs(idx, idx, 1)[0])
	}
}

func TestLogStoreDeleteRange(t *testing.T) {
	tests := []struct {
		name                string
		lo, hi              uint64 // stored entries
		min, max            uint64 // DeleteRange arguments
		wantFirst, wantLast uint64
	}{
		{"prefix", 1, 10, 1, 3, 4, 10},
		{"prefix from 0", 1, 10, 0, 3, 4, 10},
		{"suffix", 1, 10, 8, 10, 1, 7},
		{"suffix beyond last", 1, 10, 8, 100, 1, 7},
		{"suffix to MaxUint64", 1, 10, 5, math.MaxUint64, 1, 4},
		{"all", 1, 10, 1, 10, 0, 0},
		{"all, wider", 5, 10, 1, 20, 0, 0},
		{"everything", 1, 10, 0, math.MaxUint64, 0, 0},
		{"single first", 1, 10, 1, 1, 2, 10},
		{"single last", 1, 10, 10, 10, 1, 9},
		{"only entry", 7, 7, 7, 7, 0, 0},
		{"before first", 5, 10, 1, 3, 5, 10},
		{"after last", 1, 10, 20, 30, 1, 10},
		{"middle", 1, 10, 4, 6, 1, 10},
		{"min > max", 1, 10, 6, 4, 1, 10},
		{"empty store", 0, 0, 1, 5, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t)
			s := logStore(t, e, 1)
			other := logStore(t, e, 2)
			storeLogs(t, other, makeLogs(1, 20, 9))
			if tc.lo != 0 {
				storeLogs(t, s, makeLogs(tc.lo, tc.hi, 1))
			}
			if err := s.DeleteRange(tc.min, tc.max); err != nil {
				t.Fatalf("DeleteRange(%d, %d): %v", tc.min, tc.max, err)
			}
			wantBounds(t, s, tc.wantFirst, tc.wantLast)
			// The cached bounds agree with what a fresh load finds.
			wantBounds(t, logStore(t, e, 1), tc.wantFirst, tc.wantLast)
			for i := tc.lo; tc.lo != 0 && i <= tc.hi; i++ {
				deleted := tc.min <= i && i <= tc.max
				var l raft.Log
				err := s.GetLog(i, &l)
				switch {
				case deleted && err != raft.ErrLogNotFound:
					t.Errorf("GetLog(%d) after delete = %v; want ErrLogNotFound", i, err)
				case !deleted && err != nil:
					t.Errorf("GetLog(%d) = %v; want kept", i, err)
				}
			}
			wantBounds(t, other, 1, 20)
			var l raft.Log
			if err := other.GetLog(10, &l); err != nil {
				t.Fatalf("other shard lost entries: %v", err)
			}
		})
	}
}

func TestLogStoreAppendAfterDelete(t *testing.T) {
	e := newEngine(t)
	s := logStore(t, e, 1)
	storeLogs(t, s, makeLogs(1, 10, 1))

	// Raft truncates a conflicting suffix and appends the leader's entries.
	if err := s.DeleteRange(6, 10); err != nil {
		t.Fatal(err)
	}
	storeLogs(t, s, makeLogs(6, 8, 2))
	wantBounds(t, s, 1, 8)
	checkGetLog(t, s, makeLogs(6, 6, 2)[0])
	var l raft.Log
	if err := s.GetLog(9, &l); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog(9) = %v; want ErrLogNotFound", err)
	}

	// Compaction, then a snapshot install wipes the log and restarts it.
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 6, 8)
	if err := s.DeleteRange(6, 8); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 0, 0)
	storeLogs(t, s, makeLogs(100, 102, 3))
	wantBounds(t, s, 100, 102)
	wantBounds(t, logStore(t, e, 1), 100, 102)
}

func TestLogStoreReopen(t *testing.T) {
	fs := vfs.NewMem()
	e := openEngine(t, fs, "db")
	s := logStore(t, e, 1)
	storeLogs(t, s, makeLogs(1, 100, 1))
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	logs := roundTripLogs() // once: it holds a time.Now()
	storeLogs(t, logStore(t, e, 65535), logs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = openEngine(t, fs, "db")
	defer e.Close()
	s = logStore(t, e, 1)
	wantBounds(t, s, 41, 90)
	checkGetLog(t, s, makeLogs(41, 41, 1)[0])
	checkGetLog(t, s, makeLogs(90, 90, 1)[0])
	wantBounds(t, logStore(t, e, 0), 0, 0)
	wantBounds(t, logStore(t, e, 2), 0, 0)
	s = logStore(t, e, 65535)
	wantBounds(t, s, 1, uint64(len(logs)))
	for _, l := range logs {
		checkGetLog(t, s, l)
	}
}

func TestLogStoreShardsIndependent(t *testing.T) {
	e := newEngine(t)
	a, b, c := logStore(t, e, 1), logStore(t, e, 256), logStore(t, e, 2)
	storeLogs(t, a, makeLogs(1, 10, 1))
	storeLogs(t, b, makeLogs(5, 15, 2))
	// Records and stable state of the same shard live alongside.
	put(t, e, 1, 3, kvPair{"k", "v", 1})
	if err := stableStore(t, e, 1).SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}

	wantBounds(t, a, 1, 10)
	wantBounds(t, b, 5, 15)
	wantBounds(t, c, 0, 0)
	checkGetLog(t, a, makeLogs(7, 7, 1)[0])
	checkGetLog(t, b, makeLogs(7, 7, 2)[0])

	if err := a.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, a, 0, 0)
	wantBounds(t, b, 5, 15)
	checkGetLog(t, b, makeLogs(5, 5, 2)[0])
	wantRecord(t, e, 1, "k", "v", 1)
	if v, err := stableStore(t, e, 1).GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("stable CurrentTerm = %d, %v", v, err)
	}
}

func TestEncodeLogDeterministic(t *testing.T) {
	for _, l := range roundTripLogs() {
		a, b := encodeLog(nil, l), encodeLog([]byte("prefix"), l)
		if !bytes.Equal(b[len("prefix"):], a) || string(b[:len("prefix")]) != "prefix" {
			t.Fatalf("encodeLog does not append to buf")
		}
		var got raft.Log
		if err := decodeLog(a, &got); err != nil {
			t.Fatalf("decodeLog(encodeLog(%s)): %v", fmtLog(l), err)
		}
		got.Index = l.Index // the index lives in the key
		if !logsEqual(&got, wantStored(l)) {
			t.Fatalf("round trip = %s; want %s", fmtLog(&got), fmtLog(l))
		}
	}
}

func TestDecodeLogRejects(t *testing.T) {
	good := encodeLog(nil, &raft.Log{Term: 3, Type: raft.LogCommand, Data: []byte("data"),
		Extensions: []byte("ext"), AppendedAt: time.Unix(1, 2)})
	tests := map[string][]byte{
		"empty":               nil,
		"term only":           {3},
		"overlong term":       bytes.Repeat([]byte{0xff}, 11),
		"data length too big": {3, 0, 0, 100, 'x'},
		"no extensions":       {3, 0, 0, 1, 'x'},
		"trailing byte":       append(bytes.Clone(good), 0),
	}
	for i := 0; i < len(good); i++ {
		tests[fmt.Sprintf("truncated to %d", i)] = good[:i]
	}
	for name, b := range tests {
		var l raft.Log
		if err := decodeLog(b, &l); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decodeLog(%x) = %v; want ErrCorrupt", name, b, err)
		}
	}
}

// TestGetLogCorrupt: a stored entry that does not decode is reported, not
// returned as garbage. Only a raw write can produce one.
func TestGetLogCorrupt(t *testing.T) {
	e := newEngine(t)
	s := logStore(t, e, 1)
	if err := e.db.Set(logKey(1, 5), []byte{1}, nil); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(5, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetLog of a corrupt entry = %v; want ErrCorrupt", err)
	}
}

// FuzzDecodeLog: decodeLog never panics, and whatever it accepts encodes back
// to an equal Log, canonically.
func FuzzDecodeLog(f *testing.F) {
	for _, l := range roundTripLogs() {
		if len(l.Data) > 1024 {
			continue
		}
		f.Add(encodeLog(nil, l))
	}
	f.Add([]byte{})
	f.Add([]byte{0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00}) // non-minimal varints
	f.Add([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeLog error %v is not ErrCorrupt", err)
			}
			return
		}
		enc := encodeLog(nil, &l)
		var l2 raft.Log
		if err := decodeLog(enc, &l2); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", fmtLog(&l), err)
		}
		if !logsEqual(&l, &l2) || (l.Data == nil) != (l2.Data == nil) || (l.Extensions == nil) != (l2.Extensions == nil) {
			t.Fatalf("round trip changed the log:\n %s\n %s", fmtLog(&l), fmtLog(&l2))
		}
		if enc2 := encodeLog(nil, &l2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not canonical: %x then %x", enc, enc2)
		}
	})
}

// FuzzEncodeLog: every Log raft can hand us survives encode then decode.
func FuzzEncodeLog(f *testing.F) {
	f.Add(uint64(1), uint8(0), int64(1700000000123456789), []byte("data"), []byte("ext"))
	f.Add(uint64(math.MaxUint64), uint8(255), int64(-1), []byte{}, []byte(nil))
	f.Add(uint64(0), uint8(3), int64(0), []byte(nil), []byte{0})
	f.Fuzz(func(t *testing.T, term uint64, typ uint8, at int64, data, ext []byte) {
		l := &raft.Log{Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if at != 0 {
			// Unix time 0 is indistinguishable from "unset" in the encoding.
			l.AppendedAt = time.Unix(0, at)
		}
		var got raft.Log
		if err := decodeLog(encodeLog(nil, l), &got); err != nil {
			t.Fatalf("decodeLog(encodeLog(%s)): %v", fmtLog(l), err)
		}
		if !logsEqual(&got, wantStored(l)) {
			t.Fatalf("round trip = %s; want %s", fmtLog(&got), fmtLog(l))
		}
	})
}

func TestStableStore(t *testing.T) {
	e := newEngine(t)
	s := stableStore(t, e, 1)

	t.Run("missing", func(t *testing.T) {
		for _, key := range []string{"CurrentTerm", "", "x"} {
			v, err := s.Get([]byte(key))
			if err == nil || err.Error() != "not found" {
				t.Errorf("Get(%q) = %q, %v; want error \"not found\"", key, v, err)
			}
			n, err := s.GetUint64([]byte(key))
			if err == nil || err.Error() != "not found" || n != 0 {
				t.Errorf("GetUint64(%q) = %d, %v; want 0, error \"not found\"", key, n, err)
			}
		}
	})

	t.Run("set get", func(t *testing.T) {
		tests := []struct{ key, val string }{
			{"LastVoteCand", "node-1"},
			{"", "empty key"},
			{"bin\x00\xff", "\x00\xff"},
			{"empty", ""},
		}
		for _, tc := range tests {
			if err := s.Set([]byte(tc.key), []byte(tc.val)); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range tests {
			v, err := s.Get([]byte(tc.key))
			if err != nil || string(v) != tc.val {
				t.Errorf("Get(%q) = %q, %v; want %q", tc.key, v, err, tc.val)
			}
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
			t.Fatal(err)
		}
		v, _ := s.Get([]byte("LastVoteCand"))
		if string(v) != "node-2" {
			t.Fatalf("after overwrite Get = %q", v)
		}
		v[0] = 'X' // the returned slice is the caller's
		if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "node-2" {
			t.Fatalf("mutating a returned value changed the store: %q", v)
		}
	})

	t.Run("uint64", func(t *testing.T) {
		for _, n := range []uint64{0, 1, 255, 256, 1 << 32, math.MaxUint64} {
			if err := s.SetUint64([]byte("CurrentTerm"), n); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetUint64([]byte("CurrentTerm"))
			if err != nil || got != n {
				t.Fatalf("GetUint64 = %d, %v; want %d", got, err, n)
			}
		}
		if err := s.Set([]byte("short"), []byte("abc")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetUint64([]byte("short")); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("GetUint64 of a 3-byte value = %v; want ErrCorrupt", err)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		other := stableStore(t, e, 2)
		if _, err := other.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
			t.Fatalf("other shard sees stable key: %v", err)
		}
		// Same key as a user record of the same shard.
		put(t, e, 1, 1, kvPair{"LastVoteCand", "record", 1})
		if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "node-2" {
			t.Fatalf("user record clobbered stable key: %q", v)
		}
		wantRecord(t, e, 1, "LastVoteCand", "record", 1)
	})
}

func TestStableStoreReopen(t *testing.T) {
	fs := vfs.NewMem()
	e := openEngine(t, fs, "db")
	s := stableStore(t, e, 7)
	if err := s.SetUint64([]byte("CurrentTerm"), 12); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n3")); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, fs, "db")
	defer e.Close()
	s = stableStore(t, e, 7)
	if n, err := s.GetUint64([]byte("CurrentTerm")); err != nil || n != 12 {
		t.Fatalf("GetUint64 after reopen = %d, %v", n, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n3" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
}
