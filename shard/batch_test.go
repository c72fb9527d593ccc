package shard_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/shard"
)

// keyOnOtherShard returns a key whose shard among n differs from key's.
func keyOnOtherShard(t testing.TB, key string, n int) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		k := fmt.Sprintf("other%d", i)
		if shard.For(k, n) != shard.For(key, n) {
			return k
		}
	}
	t.Fatal("no key on another shard")
	return ""
}

func userPut(key, val string) shard.Op { return shard.Op{Key: key, Value: []byte(val)} }

func sysPut(key, val string) shard.Op {
	return shard.Op{Space: shard.SystemSpace, Key: key, Value: []byte(val)}
}

func TestBatchValidation(t *testing.T) {
	const maxValue = 1024
	n := open(t, shard.Config{Shards: 4, MaxValueBytes: maxValue})
	var tooMany []shard.Op
	for i := 0; i <= shard.MaxBatchOps; i++ {
		tooMany = append(tooMany, userPut(fmt.Sprintf("{t}%d", i), "v"))
	}
	var maxOps []shard.Op
	for i := 0; i < shard.MaxBatchOps; i++ {
		maxOps = append(maxOps, userPut(fmt.Sprintf("{max}%d", i), "v"))
	}
	bigSystem := make([]byte, shard.MaxSystemValueBytes)
	cases := []struct {
		name    string
		ops     []shard.Op
		wantErr error // nil: the batch applies
	}{
		{"nil", nil, shard.ErrInvalidBatch},
		{"empty", []shard.Op{}, shard.ErrInvalidBatch},
		{"too many ops", tooMany, shard.ErrInvalidBatch},
		{"cross-shard", []shard.Op{userPut("k", "1"), userPut(keyOnOtherShard(t, "k", 4), "2")}, shard.ErrInvalidBatch},
		{"cross-shard system", []shard.Op{userPut("k", "1"), sysPut(keyOnOtherShard(t, "k", 4), "2")}, shard.ErrInvalidBatch},
		{"duplicate user key", []shard.Op{userPut("{t}a", "1"), userPut("{t}b", "2"), {Key: "{t}a", Delete: true}}, shard.ErrInvalidBatch},
		{"duplicate system key", []shard.Op{sysPut("{t}a", "1"), sysPut("{t}a", "2")}, shard.ErrInvalidBatch},
		{"unknown space", []shard.Op{userPut("{t}a", "1"), {Space: 2, Key: "{t}b", Value: []byte("x")}}, shard.ErrInvalidBatch},
		{"delete with a value", []shard.Op{{Key: "{t}a", Delete: true, Value: []byte("x")}}, shard.ErrInvalidBatch},
		{"oversize user value", []shard.Op{userPut("{t}a", strings.Repeat("x", maxValue+1))}, shard.ErrValueTooLarge},
		{"oversize system value", []shard.Op{{Space: shard.SystemSpace, Key: "{t}a", Value: append(bigSystem, 0)}}, shard.ErrValueTooLarge},
		{"too many bytes", []shard.Op{
			{Space: shard.SystemSpace, Key: "{t}a", Value: bigSystem},
			{Space: shard.SystemSpace, Key: "{t}b", Value: bigSystem[:shard.MaxBatchBytes-shard.MaxSystemValueBytes]},
		}, shard.ErrInvalidBatch},
		{"empty key", []shard.Op{userPut("", "1")}, shard.ErrInvalidKey},
		{"bad key", []shard.Op{userPut("{t}a", "1"), sysPut("{t}\xff", "1")}, shard.ErrInvalidKey},
		{"if-match zero", []shard.Op{{Key: "{t}a", Value: []byte("1"), Cond: shard.Cond{IfMatch: ver(0)}}}, shard.ErrPrecondition},
		{"one op", []shard.Op{userPut("k", "1")}, nil},
		{"same key in both spaces", []shard.Op{userPut("{t}a", "u"), sysPut("{t}a", "s")}, nil},
		{"user value at the limit", []shard.Op{userPut("{t}a", strings.Repeat("x", maxValue))}, nil},
		{"system value above the user limit", []shard.Op{sysPut("{t}a", strings.Repeat("x", maxValue+1))}, nil},
		{"MaxBatchOps ops", maxOps, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := 0
			if len(c.ops) > 0 {
				s = shard.For(c.ops[0].Key, 4)
			}
			before := n.Applied(s)
			r, err := n.Batch(ctx, c.ops, nil)
			if c.wantErr == nil {
				if err != nil || r.Index == 0 || len(r.Deleted) != len(c.ops) || r.Shard != s {
					t.Fatalf("Batch = %+v, %v", r, err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if r.Index != 0 || r.Session != nil {
				t.Fatalf("rejected batch returned %+v", r)
			}
			if after := n.Applied(s); after != before {
				t.Fatalf("rejected batch moved shard %d from %d to %d", s, before, after)
			}
		})
	}
	t.Run("system value at the limit", func(t *testing.T) {
		r, err := n.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: "big", Value: bigSystem}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		g, err := n.GetIn(ctx, shard.SystemSpace, "big", shard.ReadOptions{})
		if err != nil || !g.Found || len(g.Record.Value) != len(bigSystem) || g.Record.Version != r.Index {
			t.Fatalf("GetIn(big) = found %v, %d bytes at %d, %v", g.Found, len(g.Record.Value), g.Record.Version, err)
		}
	})
	n.Close()
	if _, err := n.Batch(ctx, []shard.Op{userPut("k", "v")}, nil); !errors.Is(err, shard.ErrClosed) {
		t.Fatalf("Batch after Close: %v", err)
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := open(t, shard.Config{Shards: 4, Registerer: reg})
	s := shard.For("{t}", 4)
	a, err := n.Put(ctx, "{t}a", []byte("a1"), shard.Cond{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Put(ctx, "{t}c", []byte("c1"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Batch(ctx, []shard.Op{sysPut("{t}s", "s1")}, nil); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, sp := range []shard.Space{shard.UserSpace, shard.SystemSpace} {
			r, err := n.ScanIn(ctx, sp, shard.ScanRequest{Prefix: "{t}"}, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range r.Items {
				out[fmt.Sprintf("%s/%s", sp, it.Key)] = fmt.Sprintf("%s@%d", it.Value, it.Version)
			}
		}
		return out
	}

	failing := []struct {
		name    string
		ops     []shard.Op
		failKey string
	}{
		{"stale if-match first", []shard.Op{
			{Key: "{t}a", Value: []byte("a2"), Cond: shard.Cond{IfMatch: ver(a.Version + 1000)}},
			userPut("{t}b", "b"),
			{Key: "{t}c", Delete: true},
			sysPut("{t}x", "x"),
		}, "{t}a"},
		{"if-none-match on an existing key last", []shard.Op{
			userPut("{t}b", "b"),
			{Key: "{t}c", Delete: true},
			{Space: shard.SystemSpace, Key: "{t}s", Value: []byte("s2"), Cond: shard.Cond{IfNoneMatch: true}},
		}, "{t}s"},
		{"if-match on an absent key", []shard.Op{
			{Key: "{t}a", Value: []byte("a2"), Cond: shard.Cond{IfMatch: ver(a.Version)}},
			{Key: "{t}absent", Delete: true, Cond: shard.Cond{IfMatch: ver(a.Version)}},
		}, "{t}absent"},
		{"if-match on the other space's key", []shard.Op{
			{Space: shard.SystemSpace, Key: "{t}a", Value: []byte("x"), Cond: shard.Cond{IfMatch: ver(a.Version)}},
		}, "{t}a"},
	}
	for _, c := range failing {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot()
			r, err := n.Batch(ctx, c.ops, nil)
			if !errors.Is(err, shard.ErrPrecondition) {
				t.Fatalf("err = %v, want ErrPrecondition", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", c.failKey)) {
				t.Fatalf("error %q does not name key %q", err, c.failKey)
			}
			if r.Shard != s || r.Index != 0 || r.Session.Index(s) == 0 {
				t.Fatalf("failed batch returned %+v; want shard %d and a session covering its entry", r, s)
			}
			if after := snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("failed batch changed state:\n before %v\n after  %v", before, after)
			}
		})
	}

	t.Run("success", func(t *testing.T) {
		ops := []shard.Op{
			{Key: "{t}a", Value: []byte("a2"), Cond: shard.Cond{IfMatch: ver(a.Version)}},
			{Key: "{t}b", Value: []byte("b"), Cond: shard.Cond{IfNoneMatch: true}},
			{Key: "{t}c", Delete: true},
			{Key: "{t}missing", Delete: true},
			{Space: shard.SystemSpace, Key: "{t}a", Value: []byte("sys-a"), Cond: shard.Cond{IfNoneMatch: true}},
			{Space: shard.SystemSpace, Key: "{t}s", Delete: true},
		}
		r, err := n.Batch(ctx, ops, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Shard != s || r.Index <= a.Version || r.Session.Index(s) != r.Index {
			t.Fatalf("Batch = %+v", r)
		}
		if want := []bool{false, false, true, false, false, true}; !slices.Equal(r.Deleted, want) {
			t.Fatalf("Deleted = %v, want %v", r.Deleted, want)
		}
		want := map[string]string{
			"user/{t}a":   fmt.Sprintf("a2@%d", r.Index),
			"user/{t}b":   fmt.Sprintf("b@%d", r.Index),
			"system/{t}a": fmt.Sprintf("sys-a@%d", r.Index),
		}
		if got := snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("state after batch:\n got %v\nwant %v", got, want)
		}
	})

	var ok, failed float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lambdadb_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["op"] != "batch" {
				continue
			}
			switch labels["outcome"] {
			case "ok":
				ok = m.GetCounter().GetValue()
			case "precondition_failed":
				failed = m.GetCounter().GetValue()
			}
		}
	}
	if ok != 2 || failed != float64(len(failing)) {
		t.Fatalf("batch writes counted ok=%v precondition_failed=%v, want 2 and %d", ok, failed, len(failing))
	}
}

func TestSystemSpaceIsolation(t *testing.T) {
	fs := vfs.NewMem()
	cfg := shard.Config{FS: fs, Dir: "/d", Shards: 4}
	n := open(t, cfg)
	if _, err := n.Put(ctx, "k", []byte("user"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Put(ctx, "u/only", []byte("u"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Batch(ctx, []shard.Op{sysPut("k", "system")}, nil); err != nil {
		t.Fatal(err)
	}
	// System records under fn/ on every shard, and user keys with the same
	// prefix that a system scan must not see.
	var sysKeys []string
	version := map[string]uint64{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("fn/%02d", i)
		sysKeys = append(sysKeys, k)
		r, err := n.Batch(ctx, []shard.Op{sysPut(k, "m"+k)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		version[k] = r.Index
		if i%3 == 0 {
			if _, err := n.Put(ctx, k+"/user", []byte("u"), shard.Cond{}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	shards := map[int]bool{}
	for _, k := range sysKeys {
		shards[shard.For(k, 4)] = true
	}
	if len(shards) < 2 {
		t.Fatalf("system keys on %d shard(s), want several", len(shards))
	}

	check := func(t *testing.T, n *shard.Node) {
		get := func(sp shard.Space, key string) (string, bool) {
			t.Helper()
			g, err := n.GetIn(ctx, sp, key, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return string(g.Record.Value), g.Found
		}
		if v, ok := get(shard.UserSpace, "k"); !ok || v != "user" {
			t.Fatalf("user k = %q %v", v, ok)
		}
		if g, err := n.Get(ctx, "k", shard.ReadOptions{}); err != nil || string(g.Record.Value) != "user" {
			t.Fatalf("Get(k) = %+v %v", g, err)
		}
		if v, ok := get(shard.SystemSpace, "k"); !ok || v != "system" {
			t.Fatalf("system k = %q %v", v, ok)
		}
		if _, ok := get(shard.UserSpace, "fn/00"); ok {
			t.Fatal("a system key is visible in UserSpace")
		}
		if _, ok := get(shard.SystemSpace, "u/only"); ok {
			t.Fatal("a user key is visible in SystemSpace")
		}
		all, err := n.Scan(ctx, shard.ScanRequest{Limit: shard.MaxScanLimit}, shard.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range all.Items {
			if strings.HasPrefix(it.Key, "fn/") && !strings.HasSuffix(it.Key, "/user") || string(it.Value) == "system" {
				t.Fatalf("user scan returned system record %+v", it)
			}
		}
		// Paging a system scan across shards.
		var got []string
		req := shard.ScanRequest{Prefix: "fn/", Limit: 7}
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("paging does not end")
			}
			r, err := n.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{Consistency: shard.Session})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range r.Items {
				if string(it.Value) != "m"+it.Key || it.Version != version[it.Key] {
					t.Fatalf("system item %+v, want version %d", it, version[it.Key])
				}
				got = append(got, it.Key)
			}
			if !r.More {
				break
			}
			if len(r.Items) != 7 {
				t.Fatalf("page of %d items with more", len(r.Items))
			}
			req.Start = r.Next
		}
		if !slices.Equal(got, sysKeys) {
			t.Fatalf("paged system scan = %v, want %v", got, sysKeys)
		}
		// (Short of the stored-byte totals the shards keep: usage.go.)
		r, err := n.ScanIn(ctx, shard.SystemSpace, shard.ScanRequest{End: "quota/"}, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil || len(r.Items) != len(sysKeys)+1 || r.Items[len(r.Items)-1].Key != "k" {
			t.Fatalf("whole system scan: %d items, %v", len(r.Items), err)
		}
	}
	check(t, n)

	for _, sp := range []shard.Space{2, 255} {
		if _, err := n.GetIn(ctx, sp, "k", shard.ReadOptions{}); !errors.Is(err, shard.ErrInvalidKey) {
			t.Fatalf("GetIn(space %d): %v", sp, err)
		}
		if _, err := n.ScanIn(ctx, sp, shard.ScanRequest{}, shard.ReadOptions{}); !errors.Is(err, shard.ErrInvalidKey) {
			t.Fatalf("ScanIn(space %d): %v", sp, err)
		}
	}

	// A system delete leaves the user key of the same name alone.
	r, err := n.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: "u/only", Delete: true}}, nil)
	if err != nil || r.Deleted[0] {
		t.Fatalf("deleting an absent system key: %+v %v", r, err)
	}
	if g, err := n.Get(ctx, "u/only", shard.ReadOptions{}); err != nil || !g.Found {
		t.Fatalf("user key after a system delete of its name: %+v %v", g, err)
	}

	t.Run("after restart", func(t *testing.T) {
		n.Close()
		check(t, open(t, cfg))
	})
}

func TestRouteAndPeersOneNode(t *testing.T) {
	info := []byte("self-info")
	n := open(t, shard.Config{Shards: 4, StatusInfo: func() []byte { return info }})
	self := shard.Peer{ID: "n1", Addr: "127.0.0.1:7070"}
	for _, k := range []string{"a", "b", "{user1}/x", "{user1}/y"} {
		s, leader, replicas := n.Route(k)
		if s != shard.For(k, 4) || leader != self || !slices.Equal(replicas, []shard.Peer{self}) {
			t.Fatalf("Route(%q) = %d, %+v, %+v", k, s, leader, replicas)
		}
	}
	ps := n.Peers()
	if len(ps) != 1 || ps[0].Peer != self || !ps[0].Up || !bytes.Equal(ps[0].Info, info) {
		t.Fatalf("Peers = %+v", ps)
	}
	info = make([]byte, shard.MaxStatusInfoBytes+1)
	if ps := n.Peers(); ps[0].Info != nil {
		t.Fatalf("oversize StatusInfo returned %d bytes", len(ps[0].Info))
	}
}
