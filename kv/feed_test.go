package kv

import (
	"bytes"
	"fmt"
	"testing"
)

func feedOf(t *testing.T, e *Engine, shard int, after uint64) []FeedRecord {
	t.Helper()
	var out []FeedRecord
	if err := e.ScanFeed(shard, after, func(r FeedRecord) bool { out = append(out, r); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFeedAppendScanTrim(t *testing.T) {
	e := newEngine(t)
	for i := uint64(1); i <= 5; i++ {
		apply(t, e, 3, i, func(a *Apply) {
			for seq := uint16(0); seq < 2; seq++ {
				r := FeedRecord{Index: i, Seq: seq, Op: FeedPut, Time: int64(i * 1000), Key: []byte(fmt.Sprintf("k%d-%d", i, seq)), Value: []byte("v")}
				if seq == 1 {
					r.Op, r.Value = FeedDelete, nil
				}
				if err := a.AppendFeed(r); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	apply(t, e, 4, 1, func(a *Apply) { // another shard's feed stays apart
		if err := a.AppendFeed(FeedRecord{Index: 1, Op: FeedPut, Key: []byte("other")}); err != nil {
			t.Fatal(err)
		}
	})
	got := feedOf(t, e, 3, 0)
	if len(got) != 10 || got[0].Index != 1 || got[9].Index != 5 || got[9].Seq != 1 {
		t.Fatalf("feed = %+v", got)
	}
	if r := got[2]; string(r.Key) != "k2-0" || r.Op != FeedPut || !bytes.Equal(r.Value, []byte("v")) || r.Time != 2000 {
		t.Fatalf("record = %+v", r)
	}
	if r := got[3]; r.Op != FeedDelete || r.Value != nil {
		t.Fatalf("delete record = %+v", r)
	}
	if got := feedOf(t, e, 3, 3); len(got) != 4 || got[0].Index != 4 {
		t.Fatalf("after 3: %+v", got)
	}
	for _, tt := range []struct{ through, want uint64 }{{0, 0}, {1, 1}, {4, 4}, {5, 5}, {99, 5}, {^uint64(0), 5}} {
		if got, err := e.LastFeedIndex(3, tt.through); err != nil || got != tt.want {
			t.Fatalf("LastFeedIndex(3, %d) = %d, %v; want %d", tt.through, got, err, tt.want)
		}
	}
	if got, err := e.LastFeedIndex(5, 99); err != nil || got != 0 {
		t.Fatalf("LastFeedIndex of an empty feed = %d, %v", got, err)
	}
	apply(t, e, 3, 6, func(a *Apply) {
		if err := a.TrimFeed(2); err != nil {
			t.Fatal(err)
		}
	})
	if tr, err := e.FeedTrimmed(3); err != nil || tr != 2 {
		t.Fatalf("trimmed = %d, %v", tr, err)
	}
	if got := feedOf(t, e, 3, 0); len(got) != 6 || got[0].Index != 3 {
		t.Fatalf("after trim: %+v", got)
	}
	apply(t, e, 3, 7, func(a *Apply) { // never moves back
		if err := a.TrimFeed(1); err != nil {
			t.Fatal(err)
		}
	})
	if tr, _ := e.FeedTrimmed(3); tr != 2 {
		t.Fatalf("trim moved back to %d", tr)
	}
	if got := feedOf(t, e, 4, 0); len(got) != 1 {
		t.Fatalf("shard 4 feed = %+v", got)
	}
	// Snapshots carry the feed and the trim point.
	snap, err := e.SnapshotShard(3)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	e2 := newEngine(t)
	if err := e2.RestoreShard(3, &buf); err != nil {
		t.Fatal(err)
	}
	if got := feedOf(t, e2, 3, 0); len(got) != 6 {
		t.Fatalf("restored feed = %+v", got)
	}
	if tr, _ := e2.FeedTrimmed(3); tr != 2 {
		t.Fatalf("restored trim point %d", tr)
	}
}

func FuzzDecodeFeed(f *testing.F) {
	r := FeedRecord{Index: 7, Seq: 1, Op: FeedPut, Time: 42, Key: []byte("k"), Value: []byte("v")}
	f.Add(feedKey(1, 7, 1), encodeFeedValue(r))
	f.Add(feedKey(1, 7, 1), []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		r, err := decodeFeed(key, val)
		if err != nil {
			return
		}
		if got := encodeFeedValue(r); r.Op == FeedPut && !bytes.Equal(got, val) {
			t.Fatalf("round trip %x -> %x", val, got)
		}
	})
}

// TestFeedDepth: a record keeps its trigger depth (capped at MaxFeedDepth)
// beside its operation, and a record written without one reads as depth 0.
func TestFeedDepth(t *testing.T) {
	e := newEngine(t)
	apply(t, e, 2, 1, func(a *Apply) {
		for seq, d := range []uint8{0, 1, 16, MaxFeedDepth, 200} {
			op := FeedPut
			if seq%2 == 1 {
				op = FeedDelete
			}
			if err := a.AppendFeed(FeedRecord{Index: 1, Seq: uint16(seq), Op: op, Depth: d, Key: []byte("k")}); err != nil {
				t.Fatal(err)
			}
		}
	})
	got := feedOf(t, e, 2, 0)
	for i, want := range []uint8{0, 1, 16, MaxFeedDepth, MaxFeedDepth} {
		wantOp := FeedPut
		if i%2 == 1 {
			wantOp = FeedDelete
		}
		if got[i].Depth != want || got[i].Op != wantOp {
			t.Fatalf("record %d: depth %d op %d; want %d, %d", i, got[i].Depth, got[i].Op, want, wantOp)
		}
	}
}
