package server

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/shard"
)

// TestFeedMessageMatchesJSON: an answer assembled from cached encodings is
// byte for byte what encoding the whole answer gives, cached or not.
func TestFeedMessageMatchesJSON(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC)
	for _, tc := range []struct {
		name    string
		changes []shard.Change
	}{
		{"empty", nil},
		{"put and delete", []shard.Change{
			{Shard: 1, Index: 7, Key: "a", Value: []byte("v1"), Version: 7, Time: at},
			{Shard: 1, Index: 8, Key: "a", Delete: true, Version: 8, Value: []byte("ignored")},
		}},
		{"awkward keys and values", []shard.Change{
			{Shard: 0, Index: 1, Seq: 0, Key: `<script>"\` + "\u2028", Value: []byte{0, 255, '"'}, Version: 1},
			{Shard: 0, Index: 1, Seq: 1, Key: "ü/€", Value: []byte{}, Version: 1, Time: at},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ec := newEncCache()
			res := changefeed.Result{Changes: tc.changes, Cursor: changefeed.Cursor{0: 3, 1: 9}}
			want, err := json.Marshal(toFeedBody(res))
			if err != nil {
				t.Fatal(err)
			}
			for round := range 2 { // uncached, then cached
				got := ec.feedMessage(res, 1)
				if string(got) != string(want) || cap(got) != len(got)+1 {
					t.Fatalf("round %d (len %d cap %d):\ngot  %s\nwant %s", round, len(got), cap(got), got, want)
				}
			}
		})
	}
}

// TestEncCacheBounded: the cache keeps at most encCacheBytes and still
// answers for changes it dropped.
func TestEncCacheBounded(t *testing.T) {
	ec := newEncCache()
	value := make([]byte, 64<<10)
	for i := range 1000 {
		c := shard.Change{Shard: i % 4, Index: uint64(i), Key: fmt.Sprint("k", i), Value: value, Version: uint64(i)}
		if got := ec.encode(c); len(got) < len(value) {
			t.Fatalf("encoding %d is %d bytes", i, len(got))
		}
		if ec.bytes > encCacheBytes {
			t.Fatalf("after %d changes the cache holds %d bytes", i+1, ec.bytes)
		}
	}
	if len(ec.m) == 0 || len(ec.m) == 1000 {
		t.Fatalf("%d entries cached", len(ec.m))
	}
	first := ec.encode(shard.Change{Shard: 0, Index: 0, Key: "k0", Value: value, Version: 0})
	if want := encodeChange(shard.Change{Shard: 0, Index: 0, Key: "k0", Value: value, Version: 0}); string(first) != string(want) {
		t.Fatal("a dropped change encodes differently")
	}
}
