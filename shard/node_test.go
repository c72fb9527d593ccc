package shard_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/session"
	"lambdadb/shard"
)

func open(t testing.TB, cfg shard.Config) *shard.Node {
	t.Helper()
	if cfg.FS == nil {
		cfg.FS = vfs.NewMem()
	}
	if cfg.Dir == "" {
		cfg.Dir = "/data"
	}
	if cfg.Shards == 0 {
		cfg.Shards = 4
	}
	n, err := shard.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

var ctx = context.Background()

func ver(v uint64) *uint64 { return &v }

func TestWritesAndConditions(t *testing.T) {
	n := open(t, shard.Config{})
	put := func(key, val string, c shard.Cond) (shard.WriteResult, error) {
		return n.Put(ctx, key, []byte(val), c, nil)
	}
	first, err := put("k", "v1", shard.Cond{IfNoneMatch: true})
	if err != nil || first.Version == 0 {
		t.Fatalf("first put: %+v %v", first, err)
	}
	steps := []struct {
		name    string
		do      func() (shard.WriteResult, error)
		wantErr error
		check   func(shard.WriteResult) error
	}{
		{"if-none-match on existing", func() (shard.WriteResult, error) {
			return put("k", "x", shard.Cond{IfNoneMatch: true})
		}, shard.ErrPrecondition, nil},
		{"if-match stale version", func() (shard.WriteResult, error) {
			return put("k", "x", shard.Cond{IfMatch: ver(first.Version + 1000)})
		}, shard.ErrPrecondition, nil},
		{"if-match zero", func() (shard.WriteResult, error) {
			return put("k", "x", shard.Cond{IfMatch: ver(0)})
		}, shard.ErrPrecondition, nil},
		{"if-match on absent key", func() (shard.WriteResult, error) {
			return put("absent", "x", shard.Cond{IfMatch: ver(first.Version)})
		}, shard.ErrPrecondition, nil},
		{"if-match current version", func() (shard.WriteResult, error) {
			return put("k", "v2", shard.Cond{IfMatch: ver(first.Version)})
		}, nil, func(r shard.WriteResult) error {
			if r.Version <= first.Version {
				return fmt.Errorf("version %d not above %d", r.Version, first.Version)
			}
			return nil
		}},
		{"delete absent", func() (shard.WriteResult, error) {
			return n.Delete(ctx, "absent", shard.Cond{}, nil)
		}, nil, func(r shard.WriteResult) error {
			if r.Deleted {
				return errors.New("deleted an absent key")
			}
			return nil
		}},
		{"delete with stale if-match", func() (shard.WriteResult, error) {
			return n.Delete(ctx, "k", shard.Cond{IfMatch: ver(first.Version)}, nil)
		}, shard.ErrPrecondition, nil},
		{"delete present", func() (shard.WriteResult, error) {
			return n.Delete(ctx, "k", shard.Cond{}, nil)
		}, nil, func(r shard.WriteResult) error {
			if !r.Deleted {
				return errors.New("not deleted")
			}
			return nil
		}},
		{"if-none-match after delete", func() (shard.WriteResult, error) {
			return put("k", "v3", shard.Cond{IfNoneMatch: true})
		}, nil, nil},
		{"empty key", func() (shard.WriteResult, error) { return put("", "x", shard.Cond{}) }, shard.ErrInvalidKey, nil},
		{"value too large", func() (shard.WriteResult, error) {
			return put("big", strings.Repeat("x", 1<<20+1), shard.Cond{})
		}, shard.ErrValueTooLarge, nil},
		{"value at limit", func() (shard.WriteResult, error) {
			return put("big", strings.Repeat("x", 1<<20), shard.Cond{})
		}, nil, nil},
	}
	for _, s := range steps {
		r, err := s.do()
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.check != nil {
			if err := s.check(r); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
	}
	g, err := n.Get(ctx, "k", shard.ReadOptions{})
	if err != nil || !g.Found || string(g.Record.Value) != "v3" {
		t.Fatalf("final get: %+v %v", g, err)
	}
}

func TestReadLevelsAndSessions(t *testing.T) {
	n := open(t, shard.Config{})
	w, err := n.Put(ctx, "user/1", []byte("alice"), shard.Cond{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := shard.For("user/1", n.Shards())
	if w.Session.Index(s) != w.Version {
		t.Fatalf("write token %v does not record version %d for shard %d", w.Session, w.Version, s)
	}
	for _, c := range []shard.Consistency{shard.Linearizable, shard.Session, shard.Stale} {
		t.Run(c.String(), func(t *testing.T) {
			g, err := n.Get(ctx, "user/1", shard.ReadOptions{Consistency: c, Session: w.Session})
			if err != nil || !g.Found || string(g.Record.Value) != "alice" || g.Record.Version != w.Version {
				t.Fatalf("Get: %+v %v", g, err)
			}
			if !g.Session.Covers(w.Session) {
				t.Fatalf("read token %v does not cover write token %v", g.Session, w.Session)
			}
			_, err = n.Get(ctx, "missing", shard.ReadOptions{Consistency: c})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// A token from the future (nothing has that index) falls back to a
	// linearizable read instead of hanging.
	future := session.Token{s: w.Version + 1_000_000}
	g, err := n.Get(ctx, "user/1", shard.ReadOptions{Consistency: shard.Session, Session: future})
	if err != nil || !g.Found {
		t.Fatalf("future token: %+v %v", g, err)
	}
}

func TestScanMergesShards(t *testing.T) {
	n := open(t, shard.Config{Shards: 8})
	var keys []string
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("item/%03d", i)
		keys = append(keys, k)
		if _, err := n.Put(ctx, k, []byte(k), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"other/1", "itel", "item0", "item/\xef\xbf\xbf"} {
		if _, err := n.Put(ctx, k, []byte(k), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	keys = append(keys, "item/\xef\xbf\xbf")
	sort.Strings(keys)
	cases := []struct {
		name string
		req  shard.ScanRequest
		want []string
	}{
		{"prefix all", shard.ScanRequest{Prefix: "item/", Limit: 1000}, keys},
		{"start", shard.ScanRequest{Prefix: "item/", Start: "item/250", Limit: 1000}, keys[250:]},
		{"end", shard.ScanRequest{Prefix: "item/", End: "item/010", Limit: 1000}, keys[:10]},
		{"start before prefix", shard.ScanRequest{Prefix: "item/", Start: "a", Limit: 1000}, keys},
		{"empty range", shard.ScanRequest{Prefix: "item/", Start: "item/5", End: "item/4"}, nil},
		{"no prefix", shard.ScanRequest{Start: "item0", Limit: 1000}, []string{"item0", "other/1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := n.Scan(ctx, c.req, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range r.Items {
				got = append(got, it.Key)
				if string(it.Value) != it.Key || it.Version == 0 {
					t.Fatalf("item %+v", it)
				}
			}
			if strings.Join(got, ",") != strings.Join(c.want, ",") || r.More {
				t.Fatalf("got %d keys (more=%v), want %d", len(got), r.More, len(c.want))
			}
		})
	}
	t.Run("paging", func(t *testing.T) {
		var got []string
		req := shard.ScanRequest{Prefix: "item/", Limit: 7}
		var tok session.Token
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			r, err := n.Scan(ctx, req, shard.ReadOptions{Consistency: shard.Session, Session: tok})
			if err != nil {
				t.Fatal(err)
			}
			tok = r.Session
			for _, it := range r.Items {
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
		if strings.Join(got, ",") != strings.Join(keys, ",") {
			t.Fatalf("paged scan returned %d keys, want %d", len(got), len(keys))
		}
	})
	if _, err := n.Scan(ctx, shard.ScanRequest{Limit: shard.MaxScanLimit + 1}, shard.ReadOptions{}); !errors.Is(err, shard.ErrInvalidScan) {
		t.Fatalf("oversized limit: %v", err)
	}
}

func TestReopenChecksIdentity(t *testing.T) {
	fs := vfs.NewMem()
	n, err := shard.Open(shard.Config{FS: fs, Dir: "/d", Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if n, err = shard.Open(shard.Config{FS: fs, Dir: "/d", Shards: 4}); err != nil {
		t.Fatalf("reopen with the same settings: %v", err)
	}
	n.Close()
	for _, cfg := range []shard.Config{
		{FS: fs, Dir: "/d", Shards: 8},
		{FS: fs, Dir: "/d", Shards: 4, ID: "n2"},
		{FS: fs, Dir: "/d", Shards: 4, Replicas: 1},
		{FS: fs, Dir: "/d", Shards: 4, Addr: "127.0.0.1:9999"},
	} {
		if n, err := shard.Open(cfg); err == nil {
			n.Close()
			t.Fatalf("Open(%+v) accepted a directory made with other settings", cfg)
		}
	}
}

func TestClosedNode(t *testing.T) {
	n := open(t, shard.Config{})
	n.Close()
	if _, err := n.Put(ctx, "k", nil, shard.Cond{}, nil); !errors.Is(err, shard.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if _, err := n.Get(ctx, "k", shard.ReadOptions{}); !errors.Is(err, shard.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

// A restarted node serves every acknowledged write and re-applies none of
// the entries its state machine had already applied.
func TestRestartNoReapply(t *testing.T) {
	fs := vfs.NewMem()
	cfg := shard.Config{FS: fs, Dir: "/d", Shards: 4}
	n := open(t, cfg)
	want := map[string]uint64{}
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("k%d", i%50)
		w, err := n.Put(ctx, k, []byte(fmt.Sprint(i)), shard.Cond{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[k] = w.Version
	}
	n.Close()

	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	n = open(t, cfg)
	for k, v := range want {
		g, err := n.Get(ctx, k, shard.ReadOptions{})
		if err != nil || !g.Found || g.Record.Version != v {
			t.Fatalf("after restart %s: %+v %v, want version %d", k, g, err, v)
		}
	}
	// Each shard, and the metadata group, applies only its new leader's
	// no-op after the restart.
	applied := counterValue(t, reg, "lambdadb_raft_entries_applied_total")
	if applied != float64(cfg.Shards+1) {
		t.Fatalf("restart applied %v entries, want %d (one no-op per group)", applied, cfg.Shards+1)
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// Pages of large values stop at MaxScanBytes and paging still returns every
// key exactly once, in order.
func TestScanByteBudget(t *testing.T) {
	n := open(t, shard.Config{Shards: 4})
	const valueSize = 300 << 10
	var keys []string
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("big/%03d", i)
		keys = append(keys, k)
		v := make([]byte, valueSize)
		copy(v, k)
		if _, err := n.Put(ctx, k, v, shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	req := shard.ScanRequest{Prefix: "big/", Limit: 1000}
	pages := 0
	for {
		r, err := n.Scan(ctx, req, shard.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		size := 0
		for _, it := range r.Items {
			size += len(it.Key) + len(it.Value)
			got = append(got, it.Key)
			if string(it.Value[:len(it.Key)]) != it.Key {
				t.Fatalf("value of %s belongs to another key", it.Key)
			}
		}
		if size > shard.MaxScanBytes+valueSize+64 {
			t.Fatalf("page of %d bytes exceeds the budget", size)
		}
		if !r.More {
			break
		}
		if len(r.Items) == 0 && r.Next <= req.Start {
			t.Fatalf("paging makes no progress at %q", r.Next)
		}
		req.Start = r.Next
		if pages > 100 {
			t.Fatal("paging does not end")
		}
	}
	if strings.Join(got, ",") != strings.Join(keys, ",") {
		t.Fatalf("paged scan returned %d keys %v, want %d", len(got), got, len(keys))
	}
	if pages < 4 {
		t.Fatalf("18 MB of values came back in %d pages", pages)
	}
	t.Logf("%d pages", pages)
}

// TestScanPagingCoversEverything: paging with Next returns every key once,
// in order, whatever the limit — with keys spread over the shards and with
// most of them on one shard (a hash tag), where one shard fills its share
// of the page long before the others.
func TestScanPagingCoversEverything(t *testing.T) {
	n := open(t, shard.Config{Shards: 8})
	var keys []string
	for i := 0; i < 400; i++ {
		keys = append(keys, fmt.Sprintf("p/%04d", i))
		if i%3 == 0 {
			keys = append(keys, fmt.Sprintf("p/{tag}/%04d", i)) // one shard
		}
	}
	ops := map[int][]shard.Op{}
	for _, k := range keys {
		s := shard.For(k, 8)
		ops[s] = append(ops[s], shard.Op{Key: k, Value: []byte(k)})
	}
	for _, o := range ops {
		if _, err := n.Batch(ctx, o, nil); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(keys)
	for _, limit := range []int{1, 3, 17, 64, 100, 1000} {
		var got []string
		start, pages := "", 0
		for {
			r, err := n.Scan(ctx, shard.ScanRequest{Prefix: "p/", Start: start, Limit: limit}, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Items) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(r.Items))
			}
			for _, it := range r.Items {
				got = append(got, it.Key)
			}
			pages++
			if !r.More {
				break
			}
			if r.Next <= start {
				t.Fatalf("limit %d: next %q does not advance past %q", limit, r.Next, start)
			}
			start = r.Next
		}
		if !reflect.DeepEqual(got, keys) {
			t.Fatalf("limit %d: %d keys in %d pages, want %d", limit, len(got), pages, len(keys))
		}
	}
}

// TestScanHashTagPrefix: a prefix holding a whole {hash tag} reads only the
// tag's shard (its session token names no other) and still returns every
// key under it, page by page; a prefix with an unfinished tag reads all.
func TestScanHashTagPrefix(t *testing.T) {
	n := open(t, shard.Config{Shards: 8})
	var want []string
	for i := 0; i < 40; i++ {
		for _, k := range []string{fmt.Sprintf("{u1}o/%02d", i), fmt.Sprintf("{u2}o/%02d", i), fmt.Sprintf("{u1x}/%02d", i)} {
			if _, err := n.Put(ctx, k, []byte(k), shard.Cond{}, nil); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, fmt.Sprintf("{u1}o/%02d", i))
	}
	for _, tc := range []struct {
		prefix string
		want   []string
		shards int // shards the session token names
	}{
		{"{u1}", want, 1},
		{"{u1}o/", want, 1},
		{"{u1}o/1", want[10:20], 1},
		{"{u1", nil, 8}, // also {u1x}: every shard
	} {
		var got []string
		var shards int
		req := shard.ScanRequest{Prefix: tc.prefix, Limit: 7}
		for {
			r, err := n.Scan(ctx, req, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range r.Items {
				got = append(got, it.Key)
			}
			shards = max(shards, len(r.Session))
			if !r.More {
				break
			}
			req.Start = r.Next
		}
		if tc.want != nil && !slices.Equal(got, tc.want) {
			t.Fatalf("scan %q: %q\nwant %q", tc.prefix, got, tc.want)
		}
		if tc.want == nil && len(got) != 80 {
			t.Fatalf("scan %q: %d keys; want 80", tc.prefix, len(got))
		}
		if shards != tc.shards {
			t.Fatalf("scan %q: token names %d shards; want %d", tc.prefix, shards, tc.shards)
		}
	}
}
